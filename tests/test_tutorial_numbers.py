"""The tutorial's own numbers, reproduced through pricenet's configs and builders."""

from __future__ import annotations

import pytest
import torch
from helpers import FEATURES
from hydra.utils import instantiate

from pricenet.nn.model import build_model, count_parameters
from pricenet.nn.packed import PackedDropout
from pricenet.nn.spec import network_spec


def test_tutorial_mlp_has_10180_parameters(compose_cfg):
    cfg = compose_cfg("model=tutorial", "init=default")
    spec = network_spec(cfg, len(FEATURES), 4)
    model = build_model(
        spec, [torch.Generator().manual_seed(0)], cfg.init, cfg.model.get("layer_inits")
    )
    assert count_parameters(model) == 10_180
    assert [m.p for m in model if isinstance(m, PackedDropout)] == [0.9, 0.9]


def _criterion(compose_cfg, loss: str) -> torch.nn.Module:
    return instantiate(compose_cfg(f"loss={loss}").loss.criterion)


def test_cross_entropy_example(compose_cfg):
    loss = _criterion(compose_cfg, "cross_entropy")(
        torch.tensor([[10.0, 2.0, 0.0]]), torch.tensor([0])
    )
    assert round(loss.item(), 4) == 0.0004


def test_bce_example(compose_cfg):
    # BCE on probabilities p; the bce config takes logits, so feed logit(p).
    p = torch.tensor([0.1, 0.8, 0.9, 0.2])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss = _criterion(compose_cfg, "bce")(torch.logit(p), y)
    assert round(loss.item(), 4) == 0.1643


@pytest.mark.parametrize(("loss", "expected"), [("l1", 2.0), ("mse", 4.6667), ("smooth_l1", 1.5)])
def test_regression_loss_examples(compose_cfg, loss, expected):
    pred = torch.tensor([1.0, 2.0, 3.0])
    target = torch.tensor([2.0, 4.0, 6.0])
    assert round(_criterion(compose_cfg, loss)(pred, target).item(), 4) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim=sgd", "optim.lr=0.01"], (0.99, 0.9801)),
        (["optim=momentum", "optim.lr=0.01"], (0.99, 0.9711)),
        (["optim=adagrad", "optim.lr=0.01"], (0.99, 0.9830)),
        (["optim=rmsprop", "optim.lr=0.01", "optim.alpha=0.9"], (0.9684, 0.9458)),
    ],
)
def test_two_optimizer_steps_on_half_w_squared(compose_cfg, overrides, expected):
    cfg = compose_cfg(*overrides)
    w = torch.nn.Parameter(torch.tensor(1.0))
    optimizer = instantiate(cfg.optim, _convert_="all")([w])
    seen = []
    for _ in range(2):
        optimizer.zero_grad()
        (w**2 / 2).backward()
        optimizer.step()
        seen.append(round(w.item(), 4))
    assert tuple(seen) == expected
