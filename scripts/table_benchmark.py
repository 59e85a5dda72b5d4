"""CSV and Parquet read + validation throughput of pricenet.tables, with peak memory.

    python scripts/table_benchmark.py [--rows 1000000] [--repeats 3]

Writes a synthetic phone-price table (20 features + label + id) to a temporary folder as CSV
and as Parquet, then reads and validates it in fresh subprocesses (one per measurement, so
each peak RSS is its own), the cases alternating within each repeat so that a busy machine
slows them alike: ``read_csv`` with the default policies, and with ``missing=impute`` on a
file where 1% of two columns are empty; ``read_parquet`` on the same two tables.
Peak RSS is the process's VmHWM; the baseline is the same process after its imports. CPU s
is the process's CPU time (all threads) over the best run: on a shared machine it shows what
the wall time would be without the neighbours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r"""
import json, sys, time
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
from pricenet.tables import MOBILE_PRICE
from pricenet.tables.read import read_table
base = rss("VmRSS:")
path, case = sys.argv[1], sys.argv[2]
start, cpu = time.perf_counter(), time.process_time()
n = len(read_table(path, MOBILE_PRICE, missing="impute" if "impute" in case else "error"))
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = rss("VmHWM:")
print(json.dumps({"rows": n, "seconds": seconds, "cpu": cpu, "base_mb": base, "peak_mb": peak}))
"""


def write_tables(folder: Path, rows: int, holes: bool) -> tuple[Path, Path]:
    """The table as a CSV and as a Parquet file (holes: empty cells there, nulls here)."""
    from pricenet.tables import make_synthetic

    frame = make_synthetic(rows, seed=0).to_frame()
    frame.insert(0, "id", np.arange(1, rows + 1))
    # The generator's px_height reaches 1997 in ~0.02% of rows, above the schema's 1960.
    frame["px_height"] = frame["px_height"].clip(upper=1960)
    if holes:
        rng = np.random.default_rng(1)
        for name in ("ram", "clock_speed"):
            frame[name] = frame[name].astype(object)
            frame.loc[rng.random(rows) < 0.01, name] = ""
    name = "holes" if holes else "clean"
    frame.to_csv(folder / f"{name}.csv", index=False)
    if holes:
        for column in ("ram", "clock_speed"):
            frame[column] = pd.to_numeric(frame[column]).astype(
                "Int64" if column == "ram" else "float64"
            )
    frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder / f"{name}.csv", folder / f"{name}.parquet"


def measure(path: Path, case: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), case], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{case}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        clean_csv, clean_parquet = write_tables(Path(tmp), args.rows, holes=False)
        holes_csv, holes_parquet = write_tables(Path(tmp), args.rows, holes=True)
        print(
            f"wrote {args.rows:,} rows in {time.perf_counter() - start:.1f} s "
            f"(CSV {clean_csv.stat().st_size / 1e6:.0f} MB, "
            f"Parquet {clean_parquet.stat().st_size / 1e6:.0f} MB)"
        )
        cases = {
            "csv error": clean_csv,
            "parquet error": clean_parquet,
            "csv impute": holes_csv,
            "parquet impute": holes_parquet,
        }
        runs: dict[str, list[dict]] = {case: [] for case in cases}
        for _ in range(args.repeats):
            for case, path in cases.items():
                runs[case].append(measure(path, case))
        print("| case | rows | best s | CPU s | rows/s | peak RSS MB | after imports MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for case, results in runs.items():
            best = min(results, key=lambda r: r["seconds"])
            peak = max(r["peak_mb"] for r in results)
            print(
                f"| {case} | {best['rows']:,} | {best['seconds']:.2f} | {best['cpu']:.2f} | "
                f"{best['rows'] / best['seconds']:,.0f} | {peak:.0f} | "
                f"{best['base_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
