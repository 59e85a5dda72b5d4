"""The member-wise optimizer on bare packed tensors: no model, no trainer."""

from __future__ import annotations

import pytest
import torch

from pricenet.engine.memberwise import MemberwiseOptimizer, packable


def _packed(members: int = 3) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.arange(members * 4, dtype=torch.float32).view(members, 4))


def _grad(p: torch.Tensor, step: int) -> None:
    p.grad = torch.sin(p.detach() + step)  # any gradient that differs per member and step


def test_idle_members_keep_their_weights_and_state_and_the_others_step_as_alone():
    p = _packed()
    wrapper = MemberwiseOptimizer(torch.optim.Adam([p], lr=0.1), [p], 3)
    alone = [torch.nn.Parameter(p.detach()[m : m + 1].clone()) for m in range(3)]
    optims = [torch.optim.Adam([a], lr=0.1) for a in alone]
    schedule = [[0, 1, 2], [0, 2], [0, 1, 2], [1], [0, 1, 2]]
    for step, active in enumerate(schedule):
        _grad(p, step)
        before = p.detach().clone()
        if len(active) == 3:
            wrapper.step_all()
        else:
            wrapper.step(active)
        for m in range(3):
            if m in active:
                _grad(alone[m], step)
                alone[m].grad = p.grad[m : m + 1].clone()
                optims[m].step()
            else:
                assert torch.equal(p.detach()[m], before[m])
    assert wrapper.steps == [4, 4, 4]
    for m in range(3):
        assert torch.equal(p.detach()[m : m + 1], alone[m].detach()), m


def test_packability_is_decided_by_class_or_declared_capability():
    assert packable(torch.optim.AdamW, torch.optim.lr_scheduler.StepLR)[0]
    ok, why = packable(torch.optim.LBFGS, None)
    assert not ok and "line search" in why
    ok, why = packable(torch.optim.SGD, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert not ok and "ReduceLROnPlateau" in why
    assert not packable(torch.optim.Adadelta, None)[0]

    class Declared(torch.optim.SGD):
        elementwise = True

    assert packable(Declared, None)[0]


def test_a_coupling_optimizer_refuses_several_members():
    p = _packed()
    with pytest.raises(ValueError, match="LBFGS couples the members"):
        MemberwiseOptimizer(torch.optim.LBFGS([p]), [p], 3)
