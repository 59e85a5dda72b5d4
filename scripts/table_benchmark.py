"""CSV read + validation throughput of pricenet.tables, with peak memory.

    python scripts/table_benchmark.py [--rows 1000000] [--repeats 3]

Writes a synthetic phone-price CSV (20 features + label + id) to a temporary folder, then
reads and validates it in fresh subprocesses (one per case, so each peak RSS is its own):
``read_csv`` with the default policies, and with ``missing=impute`` on a file where 1% of
two columns are empty.
Peak RSS is the process's VmHWM; the baseline is the same process after its imports.
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

CHILD = r"""
import json, sys, time
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
from pricenet.tables import MOBILE_PRICE, read_csv
base = rss("VmRSS:")
path, case = sys.argv[1], sys.argv[2]
start = time.perf_counter()
n = len(read_csv(path, MOBILE_PRICE, missing="impute" if case == "impute" else "error"))
seconds = time.perf_counter() - start
print(json.dumps({"rows": n, "seconds": seconds, "base_mb": base, "peak_mb": rss("VmHWM:")}))
"""


def write_csv(folder: Path, rows: int, holes: bool) -> Path:
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
    path = folder / ("holes.csv" if holes else "clean.csv")
    frame.to_csv(path, index=False)
    return path


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
        clean = write_csv(Path(tmp), args.rows, holes=False)
        holes = write_csv(Path(tmp), args.rows, holes=True)
        print(
            f"wrote {args.rows:,} rows in {time.perf_counter() - start:.1f} s "
            f"({clean.stat().st_size / 1e6:.0f} MB)"
        )
        cases = [("error", clean), ("impute", holes)]
        print("| case | rows | best s | rows/s | peak RSS MB | after imports MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for case, path in cases:
            runs = [measure(path, case) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            print(
                f"| {case} | {best['rows']:,} | {best['seconds']:.2f} | "
                f"{best['rows'] / best['seconds']:,.0f} | {max(r['peak_mb'] for r in runs):.0f} | "
                f"{best['base_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
