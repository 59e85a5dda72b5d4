"""Packed equals sequential: member m of a packed fit is the same model trained alone."""

from __future__ import annotations

import itertools

import pytest
import torch
from packed_helpers import make_trainer, member_rows

from pricenet.nn.model import build_model, build_network
from pricenet.nn.packed import PackedBatchNorm1d, PackedLinear, select_members, stack_members
from pricenet.nn.spec import network_spec

# Ragged members: 4, 3 and 3 batches of 16 per epoch (Adam's step counts drift apart), and a
# member without validation rows (it keeps its last epoch).
ROWS = [(50, 20), (37, 15), (45, 0)]
SEEDS = [11, 12, 13]
HEADS = ["cross_entropy", "bce", "coral", "mse", "l1", "smooth_l1"]
OPTIMS = ["sgd", "momentum", "adam", "adamw"]
MODELS = {
    "plain": ["model.dropout=0.0"],
    "dropout-bn": ["model.dropout=0.3", "model.batch_norm=true"],
    "rrelu-dropout": ["activation=rrelu", "model.dropout=0.2", "model.hidden=[16,8]"],
    "prelu-bn-clip-l1": [
        "activation=prelu",
        "model.batch_norm=true",
        "trainer.grad_clip=0.5",
        "trainer.l1=0.001",
        "optim.weight_decay=0.01",
    ],
}
CASES = [
    (head, optim, model)
    for (head, optim), model in zip(
        itertools.product(HEADS, OPTIMS), itertools.cycle(MODELS), strict=False
    )
]


@pytest.fixture(autouse=True)
def deterministic():
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


def _rows():
    return [member_rows(n, v, seed) for seed, (n, v) in enumerate(ROWS)]


def _assert_member_close_to_alone(packed, alone, m: int) -> None:
    """Losses within 1e-2 and every weight but the noise-driven ones within 1e-3."""
    single, member = alone.state.members[0], packed.state.members[m]
    for key in ("train_loss", "val_loss"):
        assert member.history[key] == pytest.approx(single.history[key], abs=1e-2), key
    got = packed.model.member(m).state_dict()
    for key, value in alone.model.state_dict().items():
        if not key.endswith(("0.bias", "4.bias", "running_mean")):  # biases before BatchNorm
            torch.testing.assert_close(got[key], value, atol=1e-3, rtol=1e-3, msg=key)


def _assert_member_equals_alone(packed, alone, m: int, tol: float = 1e-5) -> None:
    single, member = alone.state.members[0], packed.state.members[m]
    assert member.epoch == single.epoch and member.best_epoch == single.best_epoch
    assert member.stopped_early == single.stopped_early
    for key, values in single.history.items():
        assert member.history[key] == pytest.approx(values, abs=tol), key
    got = packed.model.member(m).state_dict()
    for key, value in alone.model.state_dict().items():
        torch.testing.assert_close(got[key], value, atol=tol, rtol=tol, msg=key)
    best = select_members(packed.best_state(), [m])
    for key, value in alone.best_state().items():
        torch.testing.assert_close(best[key], value, atol=tol, rtol=tol, msg=key)


@pytest.mark.parametrize(("head", "optim", "model"), CASES, ids=["-".join(c) for c in CASES])
def test_packed_member_equals_the_member_trained_alone(compose_cfg, head, optim, model):
    cfg = compose_cfg(
        f"loss={head}",
        f"optim={optim}",
        *MODELS[model],
        "trainer.epochs=4",
        "trainer.batch_size=16",
    )
    rows = _rows()
    packed = make_trainer(cfg, rows, SEEDS)
    packed.fit()
    assert packed.member_steps == [16, 12, 12]
    # The bias of a Linear before BatchNorm has a zero gradient up to rounding, and Adam scales
    # that rounding noise (1e-9, from batched vs single matmuls) up to lr-sized steps: there,
    # the model stays close, and a row near a decision boundary may flip.
    noisy = cfg.model.batch_norm and optim.startswith("adam")
    for m in range(len(rows)):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]])
        alone.fit()
        if noisy:
            _assert_member_close_to_alone(packed, alone, m)
        else:
            _assert_member_equals_alone(packed, alone, m)


def test_early_stopping_and_a_scheduler_stay_per_member(compose_cfg):
    cfg = compose_cfg(
        "optim=adam",
        "optim.lr=0.05",
        "scheduler=step",
        "scheduler.step_size=2",
        "trainer.epochs=30",
        "trainer.patience=3",
        "trainer.batch_size=16",
        "monitor=val_loss",
    )
    rows = _rows()
    packed = make_trainer(cfg, rows, SEEDS)
    packed.fit()
    epochs = [s.epoch for s in packed.state.members]
    assert min(epochs) < 30 and len(set(epochs)) > 1  # they stop at their own epochs
    assert packed.state.epoch == max(epochs)
    for m in range(len(rows)):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]])
        alone.fit()
        _assert_member_equals_alone(packed, alone, m)


def test_full_batch_members_equal_alone(compose_cfg):
    cfg = compose_cfg("model=linear", "loss=coral", "init=default", "trainer.epochs=5")
    rows = _rows()
    packed = make_trainer(cfg, rows, SEEDS, batch_size=2048)
    packed.fit()
    for m in range(len(rows)):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]], batch_size=2048)
        alone.fit()
        _assert_member_equals_alone(packed, alone, m)


def test_init_reproduces_torch_linear_default(compose_cfg):
    cfg = compose_cfg("init=default", "model.hidden=[8]")
    spec = network_spec(cfg, 20, 4, members=2)
    model = build_model(
        spec,
        [torch.Generator().manual_seed(s) for s in (5, 6)],
        cfg.init,
        cfg.model.get("layer_inits"),
    )
    first = model[0]
    assert isinstance(first, PackedLinear) and first.weight.shape == (2, 20, 8)
    torch.manual_seed(6)
    reference = torch.nn.Linear(20, 8)  # torch's own default init from the same seed
    g = torch.Generator().manual_seed(6)
    weight = torch.empty(8, 20)
    torch.nn.init.kaiming_uniform_(weight, a=5**0.5, generator=g)
    torch.testing.assert_close(first.weight[1].T, weight)
    assert float(first.weight[1].abs().max()) <= 1 / 20**0.5 + 1e-6
    assert float(reference.weight.abs().max()) <= 1 / 20**0.5 + 1e-6
    assert not torch.equal(first.weight[0], first.weight[1])  # own generator per member


def test_kaiming_follows_the_layer_activation_and_layer_inits_override(compose_cfg):
    cfg = compose_cfg(
        "init=kaiming_normal",
        "model.hidden=[64]",
        "activation=tanh",
        "+model.layer_inits.1={weight:{_target_:torch.nn.init.zeros_,_partial_:true}}",
    )
    spec = network_spec(cfg, 20, 4)
    model = build_model(
        spec, [torch.Generator().manual_seed(0)], cfg.init, cfg.model.get("layer_inits")
    )
    g = torch.Generator().manual_seed(0)
    expected = torch.empty(64, 20)
    torch.nn.init.kaiming_normal_(expected, mode="fan_in", nonlinearity="tanh", generator=g)
    torch.testing.assert_close(model[0].weight[0].T, expected)
    assert float(model.linears()[-1].weight.abs().sum()) == 0.0


def test_members_split_and_stack_round_trip(compose_cfg):
    cfg = compose_cfg("model.batch_norm=true", "loss=coral", "activation=prelu")
    spec = network_spec(cfg, 20, 4, members=3)
    model = build_model(
        spec,
        [torch.Generator().manual_seed(s) for s in range(3)],
        cfg.init,
        cfg.model.get("layer_inits"),
    )
    states = [model.member(m).state_dict() for m in range(3)]
    rebuilt = model.from_members(states)
    x = torch.randn(3, 7, 20)
    rebuilt.eval(), model.eval()
    torch.testing.assert_close(rebuilt(x), model(x))
    assert stack_members(states).keys() == model.state_dict().keys()
    loaded = build_network(spec)  # the loading path: structure only
    loaded.load_state_dict(model.state_dict())
    torch.testing.assert_close(loaded.eval()(x), model(x))
    one = model.member(1).eval()
    torch.testing.assert_close(one(x[1:2]), model(x)[1:2])


def test_batch_norm_ignores_padded_rows():
    bn = PackedBatchNorm1d(2, 3)
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = x.clone()
    padded[1, 4:] = 1e6  # garbage in the padding must not matter
    out = bn(padded, mask)
    reference = torch.nn.BatchNorm1d(3)
    torch.testing.assert_close(out[1, :4], reference(x[1, :4]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean[1, 0], reference.running_mean)
    torch.testing.assert_close(bn.running_var[1, 0], reference.running_var)
    bn.eval(), reference.eval()
    torch.testing.assert_close(bn(x)[1], reference(x[1]), atol=1e-5, rtol=1e-5)


def test_default_mlp_members_are_bitwise_the_members_trained_alone(compose_cfg):
    """Members with as many rows as each other (no padding to reduce over) see the same
    batches, noise and reduction order as alone: the default MLP (dropout, Adam) is exact."""
    cfg = compose_cfg("trainer.epochs=3", "trainer.batch_size=16")
    rows = [member_rows(50, 20, seed) for seed in range(3)]
    packed = make_trainer(cfg, rows, SEEDS)
    packed.fit()
    for m in range(len(rows)):
        alone = make_trainer(cfg, [rows[m]], [SEEDS[m]])
        alone.fit()
        assert packed.state.members[m].history == alone.state.members[0].history
        got = packed.model.member(m).state_dict()
        for key, value in alone.model.state_dict().items():
            assert torch.equal(got[key], value), key


@pytest.mark.parametrize("head", ["cross_entropy", "coral"])
def test_a_full_step_loss_and_its_gradient_are_the_masked_ones_to_the_bit(compose_cfg, head):
    """Steps where every member has a full batch skip the mask: nothing may change."""
    cfg = compose_cfg(f"loss={head}", "model.dropout=0.0", "trainer.epochs=1")
    trainer = make_trainer(cfg, [member_rows(24, 0, seed) for seed in range(2)], [1, 2])
    x, target = trainer.train.x[:, :16], trainer.train.target[:, :16]
    mask = torch.ones(2, 16, dtype=torch.bool)
    count = torch.full((2,), 16.0)
    results = []
    for full in (False, True):
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer._member_loss(trainer.model(x, mask), target, mask, count, full)
        loss.backward(torch.ones(2))
        results.append((loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]))
    (masked, masked_grads), (plain, plain_grads) = results
    assert torch.equal(masked, plain)
    assert all(torch.equal(a, b) for a, b in zip(masked_grads, plain_grads, strict=True))


def test_a_direct_forward_skips_the_layers_hooks_only(compose_cfg):
    """The trainer's steps call the layers directly; hooks on the whole model still run."""
    cfg = compose_cfg("model.dropout=0.0", "model.batch_norm=true")
    model = build_network(network_spec(cfg, 20, 4, members=2))
    calls = []
    model.register_forward_hook(lambda *_: calls.append("model"))
    model[0].register_forward_hook(lambda *_: calls.append("layer"))
    x = torch.randn(2, 8, 20)
    mask = torch.ones(2, 8, dtype=torch.bool)
    model.eval()  # BatchNorm's running statistics stay as they are
    direct = model(x, mask, direct=True)
    assert calls == ["model"]
    assert torch.equal(direct, model(x, mask))
    assert calls == ["model", "layer", "model"]
