"""Reading and validating a table: CSV and Parquet throughput and peak memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pricenet.tables import make_synthetic

from .common import Context
from .harness import python
from .render import Table

TABLES = {
    "tables": Table(
        "Reading and validating a table",
        "A synthetic phone-price table ({rows:,} rows: id, 20 features, label) read and "
        "validated against the schema by `pricenet.tables.read.read_table`, each measurement "
        "in a fresh process, the cases alternated, best of {repeats}. 'holes': 1% empty "
        "cells in two columns, read with `missing=impute`. Peak RSS is the process's VmHWM; "
        "'after imports' its RSS before reading (pandas imported).",
        (
            ("case", "{name}"),
            ("file MB", "{file_mb:.1f}"),
            ("s", "{seconds:.2f}"),
            ("CPU s", "{cpu:.2f}"),
            ("rows/s", "{rate:,.0f}"),
            ("peak RSS MB", "{peak_mb:.0f}"),
            ("after imports MB", "{base_mb:.0f}"),
        ),
    ),
}

_READ = r"""
import json, sys, time
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import pandas  # imported by any process that holds a table; not part of the read
from pricenet.tables import MOBILE_PRICE
from pricenet.tables.read import read_table
base = rss("VmRSS:")
path, missing = sys.argv[1], sys.argv[2]
start, cpu = time.perf_counter(), time.process_time()
n = len(read_table(path, MOBILE_PRICE, missing=missing))
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"rows": n, "seconds": seconds, "cpu": cpu, "base_mb": base}))
"""


def write_tables(folder: Path, rows: int, holes: bool) -> tuple[Path, Path]:
    """The table as CSV and as Parquet (holes: empty cells there, nulls here)."""
    frame = make_synthetic(rows, seed=0).to_frame()
    frame.insert(0, "id", np.arange(1, rows + 1))
    # The generator's px_height exceeds the schema's maximum in a few rows.
    frame["px_height"] = frame["px_height"].clip(upper=1960)
    if holes:
        rng = np.random.default_rng(1)
        for name in ("ram", "clock_speed"):
            frame[name] = frame[name].astype(object)
            frame.loc[rng.random(rows) < 0.01, name] = ""
    name = "holes" if holes else "clean"
    frame.to_csv(folder / f"{name}.csv", index=False)
    if holes:
        frame["ram"] = pd.to_numeric(frame["ram"]).astype("Int64")
        frame["clock_speed"] = pd.to_numeric(frame["clock_speed"]).astype("float64")
    frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder / f"{name}.csv", folder / f"{name}.parquet"


def measure(ctx: Context) -> dict[str, Any]:
    """Best-of-N seconds, CPU seconds, rows/s and peak RSS of each format and policy."""
    n, repeats = (20_000, 1) if ctx.quick else (1_000_000, 3)
    folder = ctx.work / "tables"
    folder.mkdir()
    clean_csv, clean_parquet = write_tables(folder, n, holes=False)
    holes_csv, holes_parquet = write_tables(folder, n, holes=True)
    cases = {
        "CSV, clean, `missing=error`": (clean_csv, "error"),
        "Parquet, clean, `missing=error`": (clean_parquet, "error"),
        "CSV, holes, `missing=impute`": (holes_csv, "impute"),
        "Parquet, holes, `missing=impute`": (holes_parquet, "impute"),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (path, missing) in cases.items():  # alternated
            done = python(["-c", _READ, str(path), missing], folder)
            runs[name].append({**json.loads(done["stdout"].splitlines()[-1]), **done})
    rows = []
    for name, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        rows.append(
            {
                "name": name,
                "file_mb": cases[name][0].stat().st_size / 1e6,
                "seconds": best["seconds"],
                "cpu": best["cpu"],
                "rate": best["rows"] / best["seconds"],
                "peak_mb": max(r["peak_mb"] for r in results),
                "base_mb": best["base_mb"],
            }
        )
    return {"tables": {"facts": {"rows": n, "repeats": repeats}, "rows": rows}}
