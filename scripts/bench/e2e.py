"""End to end: the default command against importing torch alone, in fresh processes, with the
rows that split the difference (plots, TensorBoard, the imports of a run)."""

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
        "plots and TensorBoard on) against `import torch` alone: **{ratio:.2f}x**. The other "
        "rows split the difference: the command without plots, without TensorBoard, and the "
        "imports alone (`torch._dynamo` is what the first `torch.optim` optimizer and "
        "`torch.use_deterministic_algorithms` import). Peak RSS is each process's own "
        "high-water mark (VmHWM); CPU s is user + system time.",
        (
            ("command", "{name}"),
            ("wall s", "{wall_s:.2f}"),
            ("x torch", "{ratio:.2f}"),
            ("CPU s", "{cpu_s:.2f}"),
            ("peak RSS MB", "{peak_mb:.0f}"),
        ),
    ),
}

TRAIN = "python -m pricenet.train"
TORCH = 'python -c "import torch"'
# What a default run imports, in the order it needs them.
RUN_IMPORTS = (
    "import pricenet.config.config, torch, torch._dynamo, pricenet.tables.synthetic, "
    "pricenet.run.pipeline, torch.utils.tensorboard, matplotlib.figure"
)
COMMANDS = {
    TRAIN: ["pricenet.train"],
    TORCH: ["-c", "import torch"],
    f"{TRAIN} report.plots=false": ["pricenet.train", "report.plots=false"],
    f"{TRAIN} report.plots=false report.tensorboard=false": [
        "pricenet.train",
        "report.plots=false",
        "report.tensorboard=false",
    ],
    'python -c "import torch, torch._dynamo"': ["-c", "import torch, torch._dynamo"],
    "the default run's imports alone": ["-c", RUN_IMPORTS],
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
    torch_s = next(row["wall_s"] for row in rows if row["name"] == TORCH)
    for row in rows:
        row["ratio"] = row["wall_s"] / torch_s
    facts = {"repeats": repeats, "ratio": rows[0]["ratio"]}
    return {"e2e": {"facts": facts, "rows": rows}}
