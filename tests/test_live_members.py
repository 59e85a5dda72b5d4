"""What a packed fit spends on members: done members are not evaluated, every member's
outputs come from one batched pass, and every member's temperature from one joint fit."""

from __future__ import annotations

import pytest
import torch
from packed_helpers import make_trainer, member_rows

SEEDS = [1, 2, 3]


def _rows():
    return [member_rows(40, 12, seed) for seed in range(3)]


def test_members_done_are_left_out_of_the_epochs_evaluation(compose_cfg):
    """After a member stops early, each epoch's evaluation runs the live members only, and
    their figures are still those of their fits alone."""
    cfg = compose_cfg(
        "trainer.epochs=12",
        "trainer.batch_size=16",
        "optim=adam",
        "trainer.patience=1",
        "monitor=val_loss",
    )
    rows = _rows()
    packed = make_trainer(cfg, rows, SEEDS)
    evaluated: list[int] = []  # members in each eval-mode forward

    def record(module, args):
        if not module.training:
            evaluated.append(args[0].shape[0])

    packed.model.register_forward_pre_hook(record)
    packed.fit()
    epochs = [s.epoch for s in packed.state.members]
    assert min(epochs) < max(epochs)
    # two passes (training rows, validation rows) per epoch, each over the members live in it
    live = [sum(e >= epoch for e in epochs) for epoch in range(1, max(epochs) + 1)]
    assert evaluated == [n for n in live for _ in range(2)]
    for m in range(3):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]])
        alone.fit()
        assert packed.state.members[m].history == alone.state.members[0].history


def test_outputs_are_each_members_own_in_one_pass(compose_cfg):
    cfg = compose_cfg("trainer.epochs=2", "trainer.batch_size=16")
    rows = [member_rows(40, n_val, seed) for seed, n_val in enumerate((12, 7, 0))]
    packed = make_trainer(cfg, rows, SEEDS)
    packed.fit()
    passes: list[int] = []
    packed.model.register_forward_pre_hook(lambda module, args: passes.append(1))
    outputs = packed.outputs([r.x_val for r in rows])
    assert len(passes) == 1
    assert packed.model.training  # the mode it had before
    for m, row in enumerate(rows):
        alone = packed.model.member(m).eval()
        assert outputs[m].shape == (len(row.y_val), 4)
        assert torch.equal(outputs[m], alone(row.x_val.unsqueeze(0))[0])
    with pytest.raises(ValueError, match="2 row sets for 3 members"):
        packed.outputs([r.x_val for r in rows[:2]])


def test_temperatures_of_many_models_are_each_models_own():
    """One joint fit over several models' rows gives each its own temperature (the one it
    gets fitted alone, to the optimizer's tolerance); a model without rows keeps T = 1."""
    from test_calibration import categorical_sample

    from pricenet.nn.heads import CategoricalHead
    from pricenet.run.calibration import fit_temperature, fit_temperatures

    head = CategoricalHead(4)
    samples = [categorical_sample(4_000, t, seed) for seed, t in enumerate((0.5, 3.0, 1.5))]
    samples.insert(1, (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    fitted = fit_temperatures([o for o, _ in samples], [y for _, y in samples], head)
    assert fitted[1] == 1.0
    for t, true_t in zip([fitted[0], *fitted[2:]], (0.5, 3.0, 1.5), strict=True):
        assert t == pytest.approx(true_t, rel=0.1)
    for t, (outputs, y) in zip(fitted, samples, strict=True):
        assert t == pytest.approx(fit_temperature(outputs, y, head), rel=1e-3)
