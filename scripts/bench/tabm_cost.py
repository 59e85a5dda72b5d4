"""What a TabM costs on CPU: train-step time of PackedTabM against a plain PackedMLP.

    python -m scripts.bench.tabm_cost [--width 64] [--blocks 2] [--ks 8 16 32] [--fits 5]
                                      [--embedding]

One thread, random rows (``--rows`` x ``--features``, ``--classes`` classes), batches of
``--batch``, Adam, cross entropy (TabM: the mean over its k submodels), dropout drawn at each
step by both models. Every contender trains ``--epochs`` epochs after a one-epoch warm-up,
alternated epoch by epoch; the figure is the median epoch's CPU time per step (this thread's:
other work on a shared machine does not count; the wall time beside it). Ratios: against the
plain MLP of as many fits, and against the same TabM alone. The issue's targets: one
TabM fit <= 2x a plain MLP fit of the same width, and ``--fits`` TabM fits packed <= 3x one.
``--embedding``: every model behind conf/embedding/piecewise_linear.yaml's embedding (48
quantile bins per feature fitted on each fit's rows, 16 dims, version B). :func:`time_steps`
times any list of :class:`Spec` (``scripts.bench.tabm`` builds the report's section on it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from pricenet.nn.embeddings import PackedPiecewiseLinearEmbeddings, fit_bins
from pricenet.nn.packed import PackedMLP
from pricenet.nn.tabm import PackedTabM

# conf/embedding/piecewise_linear.yaml
PLE_BINS, PLE_DIM = 48, 16


@dataclass(frozen=True)
class Spec:
    """One model to time: a plain MLP (``k`` 0) or a TabM of ``k`` submodels, ``fits`` fits
    packed, ``blocks`` hidden layers of ``width``, optionally behind the PLE embedding."""

    fits: int = 1
    k: int = 0
    arch: str = "mlp"
    width: int = 64
    blocks: int = 2
    embedding: bool = False

    @property
    def name(self) -> str:
        kind = "mlp" if not self.k else f"{self.arch} k={self.k}"
        return f"{kind}{' +PLE' if self.embedding else ''} x{self.fits}"


@dataclass
class Contender:
    """A model to time and the loss of its outputs (one value per fit, summed)."""

    name: str
    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    fits: int
    k: int = 0
    arch: str = "mlp"


class Embedded(nn.Module):
    """A packed numeric embedding, then a packed backbone (as pricenet's Network)."""

    def __init__(self, embedding: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.embedding, self.backbone = embedding, backbone

    def forward(self, x: Tensor, direct: bool = False) -> Tensor:
        return self.backbone(self.embedding(x), direct=direct)


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


def build(spec: Spec, x: Tensor, classes: int, dropout: float) -> Contender:
    """``spec``'s model for rows ``x`` ``[fits, N, features]`` (the PLE's bins come from them)."""
    m, features = spec.fits, x.shape[-1]
    embedding = None
    if spec.embedding:
        bins = [fit_bins(x[i], PLE_BINS) for i in range(m)]
        embedding = PackedPiecewiseLinearEmbeddings(m, bins, PLE_DIM, False, "B")
        features = embedding.out_features
    hidden = [spec.width] * spec.blocks
    if spec.k:
        model = PackedTabM(
            m, spec.k, features, spec.width, spec.blocks, dropout, classes, spec.arch
        )
    else:
        model = PackedMLP(m, features, classes, hidden, [nn.ReLU()] * spec.blocks, dropout)
    if embedding is not None:
        model = Embedded(embedding, model)
    loss = _tabm_loss if spec.k else _mlp_loss
    return Contender(spec.name, model, loss, m, spec.k, spec.arch)


def contenders(
    width: int,
    blocks: int,
    ks: Sequence[int],
    fits: int,
    archs: Sequence[str],
    embedding: bool = False,
) -> list[Spec]:
    """Plain MLPs (one fit, ``fits`` fits), TabM of each k and arch (one fit), and the
    same with ``fits`` fits."""

    def spec(m: int, k: int = 0, arch: str = "mlp") -> Spec:
        return Spec(m, k, arch, width, blocks, embedding)

    found = [spec(1), spec(fits)]
    for arch in archs:
        found += [spec(1, k, arch) for k in ks]
        found += [spec(fits, k, arch) for k in ks]
    return found


def time_steps(
    specs: Sequence[Spec],
    *,
    rows: int = 1000,
    features: int = 20,
    classes: int = 4,
    batch: int = 256,
    dropout: float = 0.1,
    epochs: int = 5,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Median CPU (this thread's) and wall milliseconds per step of each spec, every
    contender training one epoch in turn (alternated), after a one-epoch warm-up."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = {}
    for m in sorted({s.fits for s in specs}):
        data[m] = (torch.randn(m, rows, features), torch.randint(0, classes, (m, rows)))
    found = [build(s, data[s.fits][0], classes, dropout) for s in specs]
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
    for s, t in zip(specs, times, strict=True):
        cpu, wall = (1000 * statistics.median(v) / steps for v in zip(*t, strict=True))
        result.append(
            {
                "name": s.name,
                "arch": s.arch,
                "k": s.k,
                "fits": s.fits,
                "width": s.width,
                "blocks": s.blocks,
                "embedding": s.embedding,
                "step_ms": cpu,
                "wall_ms": wall,
            }
        )
    return result


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
    embedding: bool = False,
) -> list[dict[str, float | int | str]]:
    """Median seconds per step of each contender; ratios against the plain MLP of as many
    fits and against the same TabM with one fit."""
    specs = contenders(width, blocks, ks, fits, archs, embedding)
    result = time_steps(
        specs,
        rows=rows,
        features=features,
        classes=classes,
        batch=batch,
        dropout=dropout,
        epochs=epochs,
        seed=seed,
    )
    by_name = {r["name"]: r for r in result}
    for r, s in zip(result, specs, strict=True):
        r["vs_mlp"] = r["step_ms"] / by_name[replace(s, k=0, arch="mlp").name]["step_ms"]
        r["vs_one_fit"] = r["step_ms"] / by_name[replace(s, fits=1).name]["step_ms"]
    return result


def render(result: list[dict[str, float | int | str]]) -> str:
    head = f"{'model':<24}{'fits':>5}{'cpu ms/step':>12}{'wall ms':>9}{'vs MLP':>9}{'vs 1 fit':>10}"
    lines = [head]
    for r in result:
        lines.append(
            f"{r['name']:<24}{r['fits']:>5}{r['step_ms']:>12.2f}{r['wall_ms']:>9.2f}"
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
    parser.add_argument("--embedding", action="store_true", help="behind the PLE embedding")
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
        embedding=args.embedding,
    )
    print(f"width {args.width}, {args.blocks} blocks, batch {args.batch}, 1 thread")
    print(render(result))


if __name__ == "__main__":
    main()
