"""The engine's policy: divergence per member, fallback, clipping, early stopping, SIGTERM."""

from __future__ import annotations

import logging
import math
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from packed_helpers import make_trainer, member_rows

from pricenet.checkpoints.checkpoint import load_checkpoint
from pricenet.config.monitor import Monitor
from pricenet.engine.callbacks import Checkpointer, EarlyStopping
from pricenet.engine.fit_state import MemberState
from pricenet.engine.loop import FitInterrupted, MemberData
from pricenet.errors import DivergenceError
from pricenet.run.recipe import Recipe

SEEDS = [1, 2, 3]


def _rows():
    return [member_rows(40, 12, seed) for seed in range(3)]


def test_a_diverged_member_is_excluded_while_the_others_finish(compose_cfg, caplog):
    cfg = compose_cfg("trainer.epochs=3", "trainer.batch_size=16", "model.dropout=0.0")
    rows = _rows()
    bad = rows[1]
    rows[1] = MemberData(bad.x_train * math.inf, bad.y_train, bad.x_val, bad.y_val)
    packed = make_trainer(cfg, rows, SEEDS)
    with caplog.at_level(logging.WARNING, logger="pricenet"):
        packed.fit()
    states = packed.state.members
    assert states[1].error.startswith("member 1: training diverged at epoch 1: train loss is nan")
    assert states[1].epoch == 0 and [s.epoch for s in (states[0], states[2])] == [3, 3]
    assert "the other members go on" in caplog.text
    alone = make_trainer(cfg, [rows[2]], [SEEDS[2]])
    alone.fit()
    assert states[2].history["val_loss"] == pytest.approx(
        alone.state.members[0].history["val_loss"]
    )
    # the mean curves leave the diverged member out
    mean = (states[0].history["val_acc"][-1] + states[2].history["val_acc"][-1]) / 2
    assert packed.state.history["val_acc"][-1] == pytest.approx(mean)
    assert packed.monitor_value() == pytest.approx(mean)


def test_all_members_diverged_raises(compose_cfg):
    cfg = compose_cfg("trainer.epochs=2", "trainer.batch_size=16")
    rows = [MemberData(r.x_train * math.inf, r.y_train, r.x_val, r.y_val) for r in _rows()[:2]]
    with pytest.raises(DivergenceError, match="member 0: training diverged at epoch 1"):
        make_trainer(cfg, rows, SEEDS[:2]).fit()


def test_plateau_falls_back_to_sequential_fits_and_says_so(compose_cfg, caplog):
    cfg = compose_cfg("scheduler=plateau")
    with caplog.at_level(logging.INFO, logger="pricenet"):
        assert Recipe.of(cfg).groups(3) == [[0], [1], [2]]
    assert "fitting 3 models sequentially, not packed: scheduler=plateau" in caplog.text
    assert Recipe.of(compose_cfg("optim=adamw")).groups(3) == [[0, 1, 2]]
    assert Recipe.of(compose_cfg("optim=lbfgs")).groups(2) == [[0], [1]]
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        make_trainer(cfg, _rows(), SEEDS)  # the packed trainer refuses it


def test_gradient_clipping_is_per_member(compose_cfg):
    cfg = compose_cfg("model=linear", "trainer.grad_clip=1.0")
    trainer = make_trainer(cfg, _rows()[:2], SEEDS[:2])
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    weight = trainer.model[0].weight
    weight.grad[0, 0, 0] = 3.0  # member 0: norm 3 -> clipped to 1
    weight.grad[1, 0, 0] = 0.5  # member 1: under the limit, untouched
    trainer._clip_gradients()
    assert float(weight.grad[0, 0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert float(weight.grad[1, 0, 0]) == 0.5


def _stopper(patience, scores, monitor="val_acc"):
    """Feed EarlyStopping one member's (loss, acc) per epoch, improved as the trainer judges
    it (its monitor's score); the epochs at which it stopped."""
    stopper = EarlyStopping(patience=patience)
    member = MemberState()
    trainer = SimpleNamespace(count=1, trained=[0], state=SimpleNamespace(members=[member]))
    stopper.bind(trainer)
    best, stopped = [-math.inf], []
    for epoch, (loss, acc) in enumerate(scores, start=1):
        score = Monitor(monitor).epoch_score(loss, acc)
        trainer.improved = [0] if score > best else []
        best = max(best, score)
        member.history["val_loss"].append(loss)
        member.history["val_acc"].append(acc)
        stopper.on_epoch_end(trainer)
        if member.stopped_early:
            stopped.append(epoch)
            break
    return stopped, stopper


def test_early_stopping_counts_epochs_without_improvement():
    scores = [(1.0, 0.5), (0.9, 0.6), (0.8, 0.6), (0.95, 0.55), (0.99, 0.5), (0.7, 0.9)]
    # epoch 3 ties on accuracy with a lower loss: an improvement; 4 and 5 are not
    stopped, stopper = _stopper(2, scores)
    assert stopped == [5] and stopper.bad_epochs == [2]
    stopped, _ = _stopper(3, scores)
    assert stopped == []


def test_accuracy_ties_are_broken_by_the_lower_loss():
    acc, loss = Monitor("val_acc"), Monitor("val_loss")
    assert acc.epoch_score(0.5, 0.8) > acc.epoch_score(0.6, 0.8)
    assert acc.epoch_score(0.9, 0.81) > acc.epoch_score(0.1, 0.8)
    assert loss.epoch_score(0.5, 0.1) > loss.epoch_score(0.6, 0.9)


class _SigtermAt:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer):
        if trainer.state.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_writes_last_pt_and_the_resumed_fit_equals_an_uninterrupted_one(
    compose_cfg, tmp_path
):
    cfg = compose_cfg(
        "trainer.epochs=6", "trainer.batch_size=16", "model.dropout=0.3", "optim=adam"
    )
    rows = _rows()
    full = make_trainer(cfg, rows, SEEDS)
    full.fit()

    first = make_trainer(cfg, rows, SEEDS)
    first.callbacks += [Checkpointer(tmp_path, {}, interval_s=3600), _SigtermAt(2)]
    with pytest.raises(FitInterrupted, match="SIGTERM after epoch 2"):
        first.fit()
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["epoch"] == 2 and not (tmp_path / "best.pt").exists()  # the pipeline writes it
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored

    resumed = make_trainer(cfg, rows, SEEDS)
    resumed.load_state_dict(saved["trainer"])
    resumed.fit()
    assert resumed.state.to_dict() == full.state.to_dict()
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


@pytest.mark.parametrize("overrides", [("model.dropout=0.3",), ("model.batch_norm=true",)])
def test_members_left_training_alone_equal_their_fits_alone_to_the_bit(compose_cfg, overrides):
    """Once a member is done (stopped early), the others train on their own slices of the
    packed weights, buffers and optimizer state: still the bits of their fits alone."""
    cfg = compose_cfg(
        "trainer.epochs=12",
        "trainer.batch_size=16",
        "optim=adam",
        "trainer.patience=1",
        "monitor=val_loss",
        *overrides,
    )
    rows = _rows()
    packed = make_trainer(cfg, rows, SEEDS)
    packed.fit()
    epochs = [s.epoch for s in packed.state.members]
    assert min(epochs) < max(epochs)  # some trained on after another had stopped
    for m in range(3):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]])
        alone.fit()
        assert packed.state.members[m].history == alone.state.members[0].history
        assert packed.member_steps[m] == alone.member_steps[0]
        for key, value in alone.model.state_dict().items():
            assert torch.equal(packed.model.state_dict()[key][m : m + 1], value), (m, key)
