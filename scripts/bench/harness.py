"""Timing, side-by-side alternation and machine facts: what every section measures with."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# Runs a module (or ``-c code``) and prints the process's own peak RSS (VmHWM) at exit. A
# child's rusage would not do: its maxrss starts from the parent's size at fork.
_PEAK_RSS = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print("peak_rss_kb", line.split()[1], file=sys.stderr)
atexit.register(report)
target, rest = sys.argv[1], sys.argv[2:]
if target == "-c":
    sys.argv = ["-c", *rest[1:]]
    exec(rest[0], {"__name__": "__main__"})
else:
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall seconds per contender, run A, B, A, B, ...: machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def child_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def python(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """``python <args>`` in a fresh process: wall and CPU seconds and its own peak RSS (MB)."""
    cpu, started = child_cpu(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_rss_kb")]
    return {
        "wall_s": wall,
        "cpu_s": child_cpu() - cpu,
        "peak_mb": int(peaks[-1]) / 1024 if peaks else float("nan"),
        "stdout": done.stdout,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    """What the figures ran on: no paths, no host names."""
    import torch

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "load": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        **{
            name: _version(name)
            for name in ("torch", "numpy", "pandas", "scikit-learn", "hydra-core", "pricenet")
        },
    }


def dump(results: dict[str, Any], path: Path) -> None:
    """The raw numbers, beside the report (render them again without measuring)."""
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
