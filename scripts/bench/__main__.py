"""Run the benchmark sections and write the report: ``python -m scripts.bench --help``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import SECTIONS, section
from . import __doc__ as DOC
from .common import Context
from .harness import dump, machine
from .render import report

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "BENCHMARKS.md"
DEFAULT_CSV = Path(
    os.environ.get("PRICENET_SHARED_CSV", REPO.parent / "shared" / "data" / "mobile_price.csv")
)


def report_path(out: Path | None, quick: bool, only: list[str]) -> Path:
    """``out`` if given; BENCHMARKS.md only for a full run on real data."""
    if out is not None:
        return out
    if quick:
        return REPO / "outputs" / "benchmarks" / "quick.md"
    if list(only) != list(SECTIONS):
        return REPO / "outputs" / "benchmarks" / "partial.md"
    return COMMITTED


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=DOC.splitlines()[0],
        epilog="sections: " + "; ".join(f"{k}: {v}" for k, v in SECTIONS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes on synthetic data")
    parser.add_argument(
        "--only", nargs="+", default=list(SECTIONS), metavar="SECTION", help="these sections"
    )
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="labelled CSV (real data)")
    parser.add_argument(
        "--out",
        type=Path,
        help="the report (default: BENCHMARKS.md for a full run, else outputs/benchmarks/)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="re-measure the --only sections into BENCHMARKS.md, keeping the others' figures",
    )
    args = parser.parse_args(argv)
    chosen = {name for item in args.only for name in item.split(",") if name}
    if chosen - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(chosen - set(SECTIONS))}; see --help")
    args.only = [name for name in SECTIONS if name in chosen]
    if not args.quick and not args.csv.is_file():
        parser.error(f"{args.csv}: not found (pass --csv PATH, or --quick)")
    if args.merge and (args.quick or args.out is not None):
        parser.error("--merge writes BENCHMARKS.md from real data: no --quick, no --out")
    args.out = COMMITTED if args.merge else report_path(args.out, args.quick, args.only)
    if args.quick and args.out.resolve() == COMMITTED.resolve():
        parser.error(f"{args.out}: refusing to write quick-mode figures over the committed report")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # every contender on one thread, as pricenet's runs default to
    results, specs = {}, {}
    with tempfile.TemporaryDirectory(prefix="pricenet-bench-") as work:
        ctx = Context.create(args.quick, None if args.quick else args.csv, Path(work))
        for name in args.only:
            module, started = section(name), time.perf_counter()
            results[name], specs[name] = module.measure(ctx), module.TABLES
            print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    data = (
        f"synthetic ({len(ctx.table)} rows)"
        if args.quick
        else f"{args.csv.name} ({len(ctx.table)} rows)"
    )
    facts = machine()
    if args.merge:
        results, specs, facts = merged(results, specs, facts)
    text = report(specs, results, facts, data, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    dump({"machine": facts, "data": data, "sections": results}, args.out.with_suffix(".json"))
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def merged(
    results: dict[str, Any], specs: dict[str, Any], facts: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The committed report's sections, with the re-measured ones in their place (in the
    sections' order); its date line keeps which sections were measured when."""
    import json

    old = json.loads(COMMITTED.with_suffix(".json").read_text())
    every = {name: results.get(name, old["sections"].get(name)) for name in SECTIONS}
    every = {name: value for name, value in every.items() if value is not None}
    specs = {name: specs.get(name) or section(name).TABLES for name in every}
    facts = {**facts, "date": dates(old["machine"]["date"], list(results), facts["date"])}
    return every, specs, facts


def dates(earlier: str, sections: list[str], now: str) -> str:
    """The report's date line after ``sections`` are re-measured ``now``: the first run's
    date, then when each other section was last re-measured, then these."""
    first, *parts = earlier.split("; ")
    kept = []
    for part in parts:
        names, _, when = part.partition(" re-measured ")
        left = [name for name in names.split(", ") if name not in sections]
        if left:
            kept.append(f"{', '.join(left)} re-measured {when}")
    return "; ".join([first, *kept, f"{', '.join(sections)} re-measured {now}"])


if __name__ == "__main__":
    sys.exit(main())
