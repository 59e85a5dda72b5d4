"""A crafted last.pt cannot steer a resumed run: its state is checked like the model.

Each case first shows that its crafted state had an effect when loaded the old way (torch's
own ``load_state_dict`` calls, nothing checked): the run trained with ``lr=1000`` or
``maximize=True`` and finished, or trained far past ``trainer.epochs``, or crashed with a
traceback in the middle of training. Then the same file is refused: one line naming the file
and the key, before any run folder is made, and the crafted folder is left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from helpers import build
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pricenet.checkpoints.checkpoint import LAST, load_checkpoint
from pricenet.engine.loop import FitState, Trainer
from pricenet.errors import CheckpointError, DivergenceError, shown
from pricenet.run.fits import load_data
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe

LEAN = (
    "report.tensorboard=false",
    "report.plots=false",
    "report.progress=none",
    "trainer.threads=1",
    "trainer.device=cpu",
)
# Two packed members (2 folds), Adam, a step schedule (the lr halves every epoch), early
# stopping and dropout: every kind of state a resume carries.
BASE = (
    "trainer.deterministic=true",
    "data.n_rows=160",
    "trainer.batch_size=32",
    "cv=kfold",
    "cv.folds=2",
    "optim=adam",
    "scheduler=step",
    "scheduler.step_size=1",
    "trainer.patience=5",
    "model.dropout=0.2",
    *LEAN,
)
FIRST, TOTAL = 3, 8  # the saved run trained 3 epochs; the resume asks for 8


def _compose(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A run stopped after FIRST epochs: its folder and its last.pt, loaded."""
    folder = tmp_path_factory.mktemp("saved") / "run"
    run(_compose(*BASE, f"trainer.epochs={FIRST}"), folder)
    yield {"folder": folder, "payload": load_checkpoint(folder / LAST)}


def _resume_cfg(folder: Path) -> DictConfig:
    return _compose(*BASE, f"trainer.epochs={TOTAL}", f"trainer.resume={folder}")


def _craft(saved: dict[str, Any], folder: Path, mutate: Callable[[dict], None]) -> dict:
    """A copy of the saved run whose last.pt's trainer state went through ``mutate``."""
    shutil.copytree(saved["folder"], folder)
    payload = copy.deepcopy(saved["payload"])
    mutate(payload["trainer"])
    torch.save(payload, folder / LAST)
    return payload["trainer"]


def load_unchecked(trainer: Trainer, state: dict[str, Any]) -> None:
    """What ``Trainer.load_state_dict`` did before the checks: torch's and the callbacks' own
    loads, nothing checked."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.state = FitState.from_dict(state["fit"])
    trainer.optim.load_steps(state["steps"])
    trainer.best_score = state["best_score"]
    for name, callback in trainer.policy().items():
        callback.load_state_dict(state["callbacks"][name])
    for generator, rng in zip(trainer.generators, state["rng"]["generators"], strict=True):
        generator.set_state(rng)
    torch.set_rng_state(state["rng"]["torch"])


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation that sets the trainer state's ``a.b.0.c`` to ``value``."""

    def mutate(state: dict) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = state
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _trained_with(key: str, value: Any) -> Callable[[Trainer], None]:
    """Effect: the fit trained with the optimizer's ``key`` set to ``value`` and finished."""

    def effect(trainer: Trainer) -> None:
        trainer.fit()
        if key == "lr":
            assert trainer.state.history["lr"][FIRST] == value
        else:
            assert trainer.optimizer.param_groups[0][key] == value
        assert len(trainer.state.history["lr"]) > FIRST

    return effect


def _crashes(kind: type[BaseException]) -> Callable[[Trainer], None]:
    """Effect: a traceback in the middle of training."""

    def effect(trainer: Trainer) -> None:
        with pytest.raises(kind):
            trainer.fit()

    return effect


def _trains_past_epochs(trainer: Trainer) -> None:
    trainer.fit()
    assert len(trainer.state.history["lr"]) - FIRST > TOTAL  # more epochs than the config's


def _stops_at_once(trainer: Trainer) -> None:
    trainer.fit()
    assert trainer.state.members[0].stopped_early and trainer.state.members[0].epoch == FIRST + 1


def _frozen_member_1(trainer: Trainer) -> None:
    """Effect: a healthy member taken for diverged: it never trains again."""
    trainer.fit()
    assert trainer.state.members[1].epoch == FIRST < trainer.state.members[0].epoch


def _accepted(check: Callable[[Trainer], bool]) -> Callable[[Trainer], None]:
    """Effect: the crafted value is taken as it is and the fit goes on."""

    def effect(trainer: Trainer) -> None:
        assert check(trainer)
        with contextlib.suppress(DivergenceError):
            trainer.fit()

    return effect


def _without(path: str, key: str) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        node = state
        for part in path.split("."):
            node = node[int(part) if part.isdigit() else part]
        del node[key]

    return mutate


@dataclass
class Case:
    mutate: Callable[[dict], None]
    message: str  # what follows "<file>: " in the error
    effect: Callable[[Trainer], None]


LR_AT_EPOCH_3 = 0.01 * 0.5**3  # adam's 0.01, halved each epoch by the step schedule
CASES = {
    "lr": Case(
        _set("optimizer.param_groups.0.lr", 1000.0),
        f"optimizer lr is 1000.0 in the checkpoint but {LR_AT_EPOCH_3} in the config (its "
        "schedule's lr at epoch 3)",
        _trained_with("lr", 1000.0),
    ),
    "maximize-and-betas": Case(
        lambda s: s["optimizer"]["param_groups"][0].update(maximize=True, betas=(0.0, 0.0)),
        "optimizer betas is (0.0, 0.0) in the checkpoint but (0.9, 0.999) in the config; "
        "optimizer maximize is True in the checkpoint but False in the config",
        _trained_with("maximize", True),
    ),
    "initial-lr": Case(
        _set("optimizer.param_groups.0.initial_lr", 5.0),
        "optimizer initial_lr is 5.0 in the checkpoint but 0.01 in the config",
        _accepted(lambda t: t.optimizer.param_groups[0]["initial_lr"] == 5.0),
    ),
    "state-shape": Case(
        _set("optimizer.state.0.exp_avg", torch.zeros(3)),
        "optimizer.state[0].exp_avg has shape (3,), expected (2, 20, 64)",
        _crashes(RuntimeError),
    ),
    "state-nan": Case(
        lambda s: s["optimizer"]["state"][1]["exp_avg_sq"].fill_(float("nan")),
        "optimizer.state[1].exp_avg_sq holds NaN or infinite values",
        _crashes(DivergenceError),
    ),
    "state-missing": Case(
        _without("optimizer.state.2", "exp_avg_sq"),
        "optimizer.state[2] lacks 'exp_avg_sq'",
        _crashes(KeyError),
    ),
    "step-count": Case(
        _set("optimizer.state.0.step", torch.tensor(1e9)),
        "optimizer.state[0].step is 1e+09, expected a count in 0..9",
        _accepted(lambda t: float(t.optimizer.state_dict()["state"][0]["step"]) == 1e9),
    ),
    "member-steps": Case(
        _set("steps", [-1, 9]),
        "trainer.steps[0] is -1, expected >= 0",
        _crashes(ZeroDivisionError),
    ),
    "member-steps-epoch": Case(  # 3 epochs of 3 batches each
        _set("steps", [90, 9]),
        "trainer.steps[0] is 90, but 3 epoch(s) of this member take 9 steps",
        _accepted(lambda t: t.member_steps == [90, 9]),
    ),
    "epoch": Case(
        _set("fit.epoch", -100),
        "trainer.fit.epoch is -100, expected >= 0",
        _trains_past_epochs,
    ),
    "best-epoch": Case(
        _set("fit.members.0.best_epoch", 99),
        "trainer.fit.members[0].best_epoch is 99, expected 0..3",
        _accepted(lambda t: t.state.members[0].best_epoch == 99),
    ),
    "history": Case(
        _set("fit.members.1.history.val_acc", [0.5]),
        "trainer.fit.members[1].history.val_acc has 1 item(s), expected 3",
        _accepted(lambda t: len(t.state.members[1].history["val_acc"]) == 1),
    ),
    "error-text": Case(
        _set("fit.members.1.error", "x" * 10_000_000),
        f"trainer.fit.members[1].error is {shown('x' * 60)}, expected none or one line of at "
        "most 1000 characters",
        _frozen_member_1,
    ),
    "patience-count": Case(
        lambda s: (
            s.update(best_score=[[1.0, 0.0], [1.0, 0.0]]),  # a perfect score, then 99
            s["callbacks"]["early_stopping"].update(bad_epochs=[99, 0]),
        ),
        "trainer.callbacks.early_stopping.bad_epochs[0] is 99, expected 0..5",
        _stops_at_once,
    ),
    "patience-members": Case(
        _set("callbacks.early_stopping.bad_epochs", [0]),
        "trainer.callbacks.early_stopping.bad_epochs has 1 item(s), expected 2",
        _crashes(IndexError),
    ),
    "best-score": Case(
        _set("best_score", [["x"], ["x"]]),
        "trainer.best_score[0] has 1 item(s), expected 2",
        _crashes(TypeError),
    ),
    "scheduler-step-size": Case(
        _set("callbacks.scheduler.step_size", 0),
        "trainer.callbacks.scheduler.step_size is 0, but the config's scheduler has 1 at epoch 3",
        _crashes(ZeroDivisionError),
    ),
    "scheduler-gamma": Case(
        _set("callbacks.scheduler.gamma", 1000.0),
        "trainer.callbacks.scheduler.gamma is 1000.0, but the config's scheduler has 0.5 at "
        "epoch 3",
        _accepted(lambda t: t.scheduler.gamma == 1000.0),
    ),
    "scheduler-epoch": Case(
        _set("callbacks.scheduler.last_epoch", "3"),
        "trainer.callbacks.scheduler.last_epoch is '3', but the config's scheduler has 3 at "
        "epoch 3",
        _crashes(TypeError),
    ),
    "rng": Case(
        _set("rng.generators.1", torch.zeros(5056, dtype=torch.uint8)),
        "trainer.rng.generators[1] is not a generator state (Invalid mt19937 state)",
        lambda trainer: None,  # load_unchecked itself raised; see below
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_crafted_resume_state_is_refused_in_one_line(saved, tmp_path, case):
    crafted = tmp_path / "crafted"
    state = _craft(saved, crafted, case.mutate)
    cfg = _resume_cfg(crafted)

    # without the checks: torch's own loads take the state, and it changes the run
    trainer = build(cfg)
    if case is CASES["rng"]:
        with pytest.raises(RuntimeError, match="Invalid mt19937 state"):
            load_unchecked(trainer, copy.deepcopy(state))
    else:
        load_unchecked(trainer, copy.deepcopy(state))
        case.effect(trainer)

    # now: refused before any folder is made, the crafted folder untouched
    files = {p: p.read_bytes() for p in crafted.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError) as caught:
        run(cfg, tmp_path / "resumed")
    assert str(caught.value) == f"{crafted / LAST}: {case.message}"
    assert not (tmp_path / "resumed").exists()
    assert {p: p.read_bytes() for p in crafted.rglob("*") if p.is_file()} == files
    # the trainer's own load refuses it too (the API path), before loading anything
    fresh = build(cfg)
    before = copy.deepcopy(fresh.optimizer.state_dict())
    with pytest.raises(CheckpointError, match=case.message.split(" ")[0].replace("[", r"\[")):
        fresh.load_state_dict(state)
    assert fresh.optimizer.state_dict() == before and fresh.state.epoch == 0


@pytest.mark.slow
def test_the_cli_refuses_a_crafted_lr_with_one_line_and_exit_2(saved, tmp_path):
    crafted = tmp_path / "crafted"
    _craft(saved, crafted, _set("optimizer.param_groups.0.lr", 1000.0))
    before = {p: p.read_bytes() for p in crafted.rglob("*") if p.is_file()}
    result = run_cli(
        *BASE,
        f"trainer.epochs={TOTAL}",
        f"trainer.resume={crafted}",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {crafted / LAST}: optimizer lr is 1000.0 in the checkpoint but "
        f"{LR_AT_EPOCH_3} in the config (its schedule's lr at epoch 3)"
    ]
    # no run artifact lands in the run folder (Hydra may have made it, empty of them)
    resumed = tmp_path / "resumed"
    made = {p.name for p in resumed.iterdir()} if resumed.exists() else set()
    assert not {LAST, "metrics.json", "config.yaml"} & made
    assert {p: p.read_bytes() for p in crafted.rglob("*") if p.is_file()} == before


def test_a_genuine_resume_still_equals_an_uninterrupted_run(saved, tmp_path):
    """Packed CV members, a step schedule (lr changed by it) and early stopping pass the
    checks, and end where an uninterrupted run does."""
    full, _ = run(_compose(*BASE, f"trainer.epochs={TOTAL}"), tmp_path / "full")
    resumed, _ = run(_resume_cfg(saved["folder"]), tmp_path / "resumed")
    assert full["epochs_run"] > FIRST
    assert resumed == full
    assert (tmp_path / "resumed" / "metrics.csv").read_text() == (
        tmp_path / "full" / "metrics.csv"
    ).read_text()


@pytest.mark.parametrize(
    "extra",
    [
        ["optim=sgd"],
        ["optim=momentum", "scheduler=cosine", "scheduler.T_max=4"],
        ["optim=adagrad", "scheduler=exponential"],
        ["optim=rmsprop", "optim.momentum=0.5", "+optim.centered=true"],
        ["optim=adamw", "+optim.amsgrad=true", "scheduler=multistep"],
        ["experiment=recommended", "trainer.batch_size=160"],  # L-BFGS, one model
        ["scheduler=plateau", "scheduler.patience=0"],  # one model: it follows its metric
    ],
    ids=["sgd", "momentum-cosine", "adagrad", "rmsprop", "amsgrad", "lbfgs", "plateau"],
)
def test_every_optimizer_and_schedule_resumes(compose_cfg, tmp_path, extra):
    common = ("trainer.deterministic=true", "data.n_rows=160", "trainer.batch_size=32", *LEAN)
    common = (*common, *extra)
    run(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "first")
    full, _ = run(compose_cfg(*common, "trainer.epochs=4"), tmp_path / "full")
    resume = f"trainer.resume={tmp_path / 'first'}"
    resumed, _ = run(compose_cfg(*common, "trainer.epochs=4", resume), tmp_path / "resumed")
    assert resumed == full


def test_a_resume_with_a_member_stopped_early_equals_an_uninterrupted_run(compose_cfg, tmp_path):
    """A member that stopped before the saved epoch (its epoch, counts and history shorter
    than the others') passes the checks."""
    common = (
        "trainer.deterministic=true",
        "data.n_rows=160",
        "trainer.batch_size=16",
        "cv=kfold",
        "cv.folds=4",
        "optim.lr=0.02",
        "trainer.patience=2",
        "monitor=val_loss",
        *LEAN,
    )
    _, first = run(compose_cfg(*common, "trainer.epochs=5"), tmp_path / "first")
    members = load_checkpoint(first[LAST])["trainer"]["fit"]["members"]
    assert [(m["epoch"], m["stopped_early"]) for m in members][0] == (4, True)
    assert [m["epoch"] for m in members][2] == 5
    full, _ = run(compose_cfg(*common, "trainer.epochs=10"), tmp_path / "full")
    resume = f"trainer.resume={tmp_path / 'first'}"
    resumed, _ = run(compose_cfg(*common, "trainer.epochs=10", resume), tmp_path / "resumed")
    assert full["epochs_run"] > 5
    assert resumed == full


def test_a_resume_on_changed_data_is_refused_before_the_folder_is_made(compose_cfg, tmp_path):
    frame = load_data(Recipe.of(compose_cfg("data.n_rows=160")).data).to_frame()
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    common = ("data=csv", f"data.path={path}", "data/schema=mobile_price", *LEAN)
    run(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "first")
    frame.loc[0, "ram"] += 1
    frame.to_csv(path, index=False)
    resume = f"trainer.resume={tmp_path / 'first'}"
    with pytest.raises(CheckpointError, match="that run was trained on other data than"):
        run(compose_cfg(*common, "trainer.epochs=4", resume), tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """The paths to every value in a trainer state that holds no other value."""
    if isinstance(node, dict | list) and node:
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            yield from _leaves(value, (*path, key))
    else:
        yield path


def _junk(value: Any, rng: random.Random) -> Any:
    """A wrong value in place of ``value``: another type, out of range, another shape..."""
    choices: list[Any] = [None, -1, 10**12, 2.5, math.nan, math.inf, "x", True, [], {}]
    if isinstance(value, torch.Tensor):
        choices += [
            torch.zeros(3),
            value.to(torch.float64 if value.is_floating_point() else torch.float32),
            value.flatten()[:-1] if value.numel() else torch.ones(1),
        ]
        if value.is_floating_point():
            choices.append(torch.full_like(value, math.nan))
    return rng.choice(choices)


@pytest.mark.slow
def test_random_crafted_states_are_refused_or_train_without_a_traceback(saved, tmp_path):
    """Any one value of the state replaced by junk: refused in one line by the trainer's load,
    or (where the junk is harmless, a history value say) trained to the end without an error
    other than a diverged run."""
    rng = random.Random(16)
    state = saved["payload"]["trainer"]
    leaves = list(_leaves(state))
    cfg = _resume_cfg(saved["folder"])
    refused = 0
    for _ in range(60):
        path = rng.choice(leaves)
        crafted = copy.deepcopy(state)
        node = crafted
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _junk(node[path[-1]], rng)
        trainer = build(cfg)
        try:
            trainer.load_state_dict(crafted)
        except CheckpointError as err:
            assert "\n" not in str(err) and len(str(err)) < 400, path
            refused += 1
            continue
        with contextlib.suppress(DivergenceError):
            trainer.fit()
    assert refused >= 57  # nearly every value matters (the others: curve values in range)
