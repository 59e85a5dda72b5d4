"""What a TabM costs on CPU: train-step time of PackedTabM against a plain PackedMLP.

    python -m scripts.bench.tabm_cost [--width 64] [--blocks 2] [--ks 8 16 32] [--fits 5]

One thread, random rows (``--rows`` x ``--features``, ``--classes`` classes), batches of
``--batch``, Adam, cross entropy (TabM: the mean over its k submodels), dropout drawn at each
step by both models. Every contender trains ``--epochs`` epochs after a one-epoch warm-up,
alternated epoch by epoch; the figure is the median epoch's CPU time per step (this thread's:
other work on a shared machine does not count; the wall time beside it). Ratios: against the
plain MLP of as many fits, and against the same TabM alone. The issue's targets: one
TabM fit <= 2x a plain MLP fit of the same width, and ``--fits`` TabM fits packed <= 3x one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pricenet.nn.packed import PackedMLP
from pricenet.nn.tabm import PackedTabM


@dataclass
class Contender:
    """A model to time and the loss of its outputs (one value per fit, summed)."""

    name: str
    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    fits: int
    k: int = 0
    arch: str = "mlp"


def _mlp_loss(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]


def _tabm_loss(out: Tensor, y: Tensor) -> Tensor:
    """Each submodel's loss, averaged over rows and the k submodels, summed over fits."""
    k = out.shape[2]
    target = y.unsqueeze(2).expand(-1, -1, k)
    per = nn.functional.cross_entropy(out.flatten(0, 2), target.flatten(), reduction="sum")
    return per / (y.shape[1] * k)


def _epoch(
    c: Contender, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch: int
) -> tuple[float, float]:
    """One epoch of ``c`` over ``x``/``y`` (``[M, N, ...]``); its CPU and wall time."""
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, x.shape[1], batch):
        out = c.model(x[:, i : i + batch], direct=True)
        loss = c.loss(out, y[:, i : i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.thread_time() - cpu, time.perf_counter() - start


def contenders(
    features: int,
    classes: int,
    width: int,
    blocks: int,
    dropout: float,
    ks: Sequence[int],
    fits: int,
    archs: Sequence[str],
) -> list[Contender]:
    """Plain MLPs (one fit, ``fits`` fits), TabM of each k and arch (one fit), and the
    largest k of each arch with ``fits`` fits."""

    def mlp(m: int) -> Contender:
        model = PackedMLP(m, features, classes, [width] * blocks, [nn.ReLU()] * blocks, dropout)
        return Contender(f"mlp x{m}", model, _mlp_loss, m)

    def tabm(m: int, k: int, arch: str) -> Contender:
        model = PackedTabM(m, k, features, width, blocks, dropout, classes, arch)
        return Contender(f"{arch} k={k} x{m}", model, _tabm_loss, m, k, arch)

    found = [mlp(1), mlp(fits)]
    for arch in archs:
        found += [tabm(1, k, arch) for k in ks]
        found += [tabm(fits, k, arch) for k in ks]
    return found


def measure(
    *,
    rows: int = 1000,
    features: int = 20,
    classes: int = 4,
    batch: int = 256,
    width: int = 64,
    blocks: int = 2,
    dropout: float = 0.1,
    ks: Sequence[int] = (8, 16, 32),
    fits: int = 5,
    archs: Sequence[str] = ("tabm",),
    epochs: int = 5,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Median seconds per step of each contender; ratios against the plain MLP of as many
    fits and against the same TabM with one fit."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    found = contenders(features, classes, width, blocks, dropout, ks, fits, archs)
    data = {}
    for m in {c.fits for c in found}:
        data[m] = (torch.randn(m, rows, features), torch.randint(0, classes, (m, rows)))
    optims = [torch.optim.Adam(c.model.parameters(), lr=1e-3) for c in found]
    times: list[list[tuple[float, float]]] = [[] for _ in found]
    for c in found:
        c.model.train()
    for epoch in range(epochs + 1):  # epoch 0 warms up
        for c, opt, t in zip(found, optims, times, strict=True):
            x, y = data[c.fits]
            seconds = _epoch(c, opt, x, y, batch)
            if epoch:
                t.append(seconds)
    steps = -(-rows // batch)
    result = []
    for c, t in zip(found, times, strict=True):
        cpu, wall = (1000 * statistics.median(v) / steps for v in zip(*t, strict=True))
        result.append(
            {
                "name": c.name,
                "arch": c.arch,
                "k": c.k,
                "fits": c.fits,
                "step_ms": cpu,
                "wall_ms": wall,
            }
        )
    by_name = {r["name"]: r for r in result}
    for r in result:
        r["vs_mlp"] = r["step_ms"] / by_name[f"mlp x{r['fits']}"]["step_ms"]
        one = by_name.get(f"{r['arch']} k={r['k']} x1" if r["k"] else "mlp x1")
        r["vs_one_fit"] = r["step_ms"] / one["step_ms"]
    return result


def render(result: list[dict[str, float | int | str]]) -> str:
    head = f"{'model':<20}{'fits':>5}{'cpu ms/step':>12}{'wall ms':>9}{'vs MLP':>9}{'vs 1 fit':>10}"
    lines = [head]
    for r in result:
        lines.append(
            f"{r['name']:<20}{r['fits']:>5}{r['step_ms']:>12.2f}{r['wall_ms']:>9.2f}"
            f"{r['vs_mlp']:>8.2f}x{r['vs_one_fit']:>9.2f}x"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--fits", type=int, default=5)
    parser.add_argument("--archs", nargs="+", default=["tabm"], choices=["tabm", "mini", "packed"])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    result = measure(
        rows=args.rows,
        features=args.features,
        batch=args.batch,
        width=args.width,
        blocks=args.blocks,
        dropout=args.dropout,
        ks=args.ks,
        fits=args.fits,
        archs=args.archs,
        epochs=args.epochs,
    )
    print(f"width {args.width}, {args.blocks} blocks, batch {args.batch}, 1 thread")
    print(render(result))


if __name__ == "__main__":
    main()
