"""End to end: the default command against importing torch alone, in fresh processes."""

from __future__ import annotations

import statistics
from typing import Any

from .common import Context
from .harness import python
from .render import Table

TABLES = {
    "e2e": Table(
        "End to end",
        "Median of {repeats} alternated fresh processes: the default command (synthetic data, "
        "plots and TensorBoard on) against `import torch` alone: **{ratio:.2f}x**. Peak RSS "
        "is each process's own high-water mark (VmHWM); CPU s is user + system time.",
        (
            ("command", "{name}"),
            ("wall s", "{wall_s:.2f}"),
            ("CPU s", "{cpu_s:.2f}"),
            ("peak RSS MB", "{peak_mb:.0f}"),
        ),
    ),
}

COMMANDS = {
    "python -m pricenet.train": ["pricenet.train"],
    'python -c "import torch"': ["-c", "import torch"],
}


def measure(ctx: Context) -> dict[str, Any]:
    """Wall, CPU and peak RSS of each command (outputs under a scratch root)."""
    repeats = 1 if ctx.quick else 3
    root = ctx.work / "e2e"
    root.mkdir()
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, args in COMMANDS.items():  # alternated
            samples[name].append(python(args, root, {"PRICENET_ROOT": str(root)}))
    rows = [
        {
            "name": name,
            "wall_s": statistics.median(s["wall_s"] for s in runs),
            "cpu_s": statistics.median(s["cpu_s"] for s in runs),
            "peak_mb": max(s["peak_mb"] for s in runs),
        }
        for name, runs in samples.items()
    ]
    facts = {"repeats": repeats, "ratio": rows[0]["wall_s"] / rows[1]["wall_s"]}
    return {"e2e": {"facts": facts, "rows": rows}}
