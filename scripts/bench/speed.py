"""Training speed: pricenet's loop vs the tutorial's DataLoader loop, where a step's time goes,
and the time until validation accuracy first reaches a target."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from pricenet.config.seed import set_seed
from pricenet.run.fits import build_trainer
from pricenet.run.recipe import Recipe
from pricenet.tables import stratified_split

from .common import Context, compose_cfg, single
from .harness import alternate
from .render import Table

TABLES = {
    "profile": Table(
        "Where a training step's time goes",
        "Median µs per phase of one step of the tutorial's model and SGD, one thread, over "
        "{steps} steps. Both loops pay forward, backward and the optimizer; what pricenet "
        "removes is the DataLoader's per-sample indexing and collation and the per-batch "
        "`.item()`, so that share bounds its speed-up.",
        (("phase", "{phase}"), ("batch 8 µs", "{us_8:.0f}"), ("batch 64 µs", "{us_64:.0f}")),
    ),
    "speed": Table(
        "Training speed",
        "The tutorial's model (20-64-128-4, dropout 0.9), standardized features, SGD lr 0.01, "
        "{rows} training rows, {epochs} epochs, median of {repeats} alternated fits after a "
        "warm-up. pricenet: `build_trainer(...).fit()` (the packed engine at one member, its "
        "bookkeeping included). Full batch: one forward, backward and step per epoch.",
        (
            ("batch", "{batch}"),
            ("pricenet epochs/s", "{pricenet:.1f}"),
            ("tutorial epochs/s", "{tutorial:.1f}"),
            ("speed-up", "{speedup:.2f}x"),
            ("full-batch epochs/s", "{full_batch:.1f}"),
            ("full batch / pricenet", "{vs_limit:.2f}x"),
        ),
    ),
    "tta": Table(
        "Time to accuracy",
        "Wall seconds until validation accuracy first reaches {target:.0%} (median over "
        "{seeds} seeds, at most {max_epochs} epochs, one 70/15/15 split, validation each "
        "epoch). pricenet: `experiment=recommended`. Tutorial: its loop and model, "
        "standardized, dropout 0.2, SGD lr 0.1, batch 8.",
        (
            ("contender", "{name}"),
            ("median s to target", "{seconds:.2f}"),
            ("runs reaching it", "{reached}/{runs}"),
            ("epochs (max over seeds)", "{epochs}"),
        ),
    ),
}


class TutorialNet(torch.nn.Module):
    """The tutorial's hand-written network: 20 -> 64 -> 128 -> 4 with dropout."""

    def __init__(self, dropout: float = 0.9) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 64)
        self.fc2 = torch.nn.Linear(64, 128)
        self.fc3 = torch.nn.Linear(128, 4)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def tutorial_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    dropout: float,
    on_epoch: Callable[[torch.nn.Module], bool] | None = None,
) -> None:
    """The tutorial's loop: DataLoader(shuffle) and `.item()` on every batch.

    ``on_epoch(model)`` may return True to stop.
    """
    model = TutorialNet(dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss.item()
        if on_epoch is not None and on_epoch(model):
            return


def full_batch_fit(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The limit: one forward, backward and step over all training rows per epoch."""
    model = TutorialNet(0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


PHASES = ("DataLoader batch", "slice batch", "forward + loss", "backward", "step + zero_grad")


def step_profile(x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
    """Median microseconds of each of :data:`PHASES` (then `.item()`) in one training step."""
    model = TutorialNet(0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    dataset = TensorDataset(x, y)
    loader = iter(DataLoader(dataset, batch_size=batch, shuffle=True))
    perm = torch.randperm(len(x))
    xs, ys = torch.split(x[perm], batch), torch.split(y[perm], batch)
    samples: list[list[float]] = [[] for _ in range(len(PHASES) + 1)]
    for i in range(steps):
        t = [time.perf_counter()]
        try:
            next(loader)
        except StopIteration:
            loader = iter(DataLoader(dataset, batch_size=batch, shuffle=True))
            next(loader)
        t.append(time.perf_counter())
        xb, yb = xs[i % len(xs)], ys[i % len(ys)]
        t.append(time.perf_counter())
        loss = criterion(model(xb), yb)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad()
        t.append(time.perf_counter())
        loss.item()
        t.append(time.perf_counter())
        for k in range(len(samples)):
            samples[k].append(1e6 * (t[k + 1] - t[k]))
    return [statistics.median(s) for s in samples]


def _speed(ctx: Context) -> dict[str, Any]:
    epochs, repeats = (2, 1) if ctx.quick else (10, 5)
    rows_split = stratified_split(ctx.table.labels, 0.0, 0.2, 0)
    rows, profiles = [], {}
    steps = 50 if ctx.quick else 300
    for batch in (8, 64):
        cfg = compose_cfg(
            *ctx.data,
            "experiment=tutorial",
            f"trainer.batch_size={batch}",
            f"trainer.epochs={epochs}",
            "optim.lr=0.01",
            "data.standardize=true",
        )
        set_seed(0)
        prepared = single(cfg, ctx.table, rows_split)
        x, y = prepared.members[0].x_train, prepared.members[0].y_train
        recipe = Recipe.of(cfg)
        build_trainer(recipe, prepared).fit()  # warm-up
        seconds = alternate(
            {
                "pricenet": lambda r=recipe, p=prepared: build_trainer(r, p).fit(),
                "tutorial": lambda b=batch, x=x, y=y: tutorial_fit(
                    x, y, epochs=epochs, batch_size=b, lr=0.01, dropout=0.9
                ),
                "full_batch": lambda x=x, y=y: full_batch_fit(x, y, epochs),
            },
            repeats,
        )
        eps = {name: epochs / s for name, s in seconds.items()}
        rows.append(
            {
                "batch": batch,
                **eps,
                "speedup": eps["pricenet"] / eps["tutorial"],
                "vs_limit": eps["full_batch"] / eps["pricenet"],
            }
        )
        profiles[batch] = step_profile(x, y, batch, steps)
    phases = [*PHASES, ".item()"]
    profile_rows = [
        {"phase": phase, "us_8": profiles[8][k], "us_64": profiles[64][k]}
        for k, phase in enumerate(phases)
    ]
    return {
        "profile": {"facts": {"steps": steps}, "rows": profile_rows},
        "speed": {
            "facts": {"rows": len(rows_split[0]), "epochs": epochs, "repeats": repeats},
            "rows": rows,
        },
    }


class FirstReach:
    """Wall time at which validation accuracy first reaches ``target`` (a pricenet callback)."""

    def __init__(self, target: float) -> None:
        self.target, self.start = target, time.perf_counter()
        self.epochs, self.seconds = 0, None

    def hit(self, val_acc: float) -> bool:
        self.epochs += 1
        if self.seconds is None and val_acc >= self.target:
            self.seconds = time.perf_counter() - self.start
        return self.seconds is not None

    def on_epoch_end(self, trainer: Any) -> None:
        if self.hit(trainer.state.last("val_acc")):
            trainer.state.members[0].stopped_early = True


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _time_to_accuracy(ctx: Context) -> dict[str, Any]:
    target, max_epochs, seeds = (0.80, 20, 1) if ctx.quick else (0.95, 100, 3)
    rows_split = stratified_split(ctx.table.labels, 0.15, 0.15, 0)
    found: dict[str, list[FirstReach]] = {"pricenet": [], "tutorial": []}
    for seed in range(seeds):
        for name in found:  # alternated
            set_seed(seed)
            watch = FirstReach(target)
            if name == "pricenet":
                cfg = compose_cfg(
                    *ctx.data,
                    "experiment=recommended",
                    f"trainer.seed={seed}",
                    f"trainer.epochs={max_epochs}",
                )
                prepared = single(cfg, ctx.table, rows_split, seed)
                build_trainer(Recipe.of(cfg), prepared, callbacks=[watch]).fit()
            else:
                cfg = compose_cfg(*ctx.data, "data.standardize=true")
                data = single(cfg, ctx.table, rows_split, seed).members[0]
                tutorial_fit(
                    data.x_train,
                    data.y_train,
                    epochs=max_epochs,
                    batch_size=8,
                    lr=0.1,
                    dropout=0.2,
                    on_epoch=lambda m, w=watch, d=data: w.hit(_accuracy(m, d.x_val, d.y_val)),
                )
            found[name].append(watch)
    rows = []
    for name, watches in found.items():
        reached = [w.seconds for w in watches if w.seconds is not None]
        rows.append(
            {
                "name": name,
                "seconds": statistics.median(reached) if len(reached) == len(watches) else None,
                "reached": len(reached),
                "runs": len(watches),
                "epochs": max(w.epochs for w in watches),
            }
        )
    facts = {"target": target, "seeds": seeds, "max_epochs": max_epochs}
    return {"tta": {"facts": facts, "rows": rows}}


def measure(ctx: Context) -> dict[str, Any]:
    """The three tables: step profile, epochs per second, time to accuracy."""
    return {**_speed(ctx), **_time_to_accuracy(ctx)}
