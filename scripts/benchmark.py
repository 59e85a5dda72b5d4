"""``python scripts/benchmark.py ARGS`` runs ``python -m scripts.bench ARGS`` (the old command)."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
runpy.run_module("scripts.bench", run_name="__main__", alter_sys=True)
