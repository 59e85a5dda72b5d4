"""The epoch plan on its own: sizes, a batch size and generators in; no model."""

from __future__ import annotations

import torch

from pricenet.engine.epochs import batches_per_epoch, plan_epoch


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_each_member_sees_its_own_permutation_in_consecutive_batches():
    sizes, batch = [10, 7], 4
    plan = plan_epoch(sizes, [0, 1], batch, _generators(1, 2))
    assert plan.steps == [3, 2] and plan.index.shape == (3, 2, 4)
    for m, n in enumerate(sizes):
        rows = plan.index[:, m][plan.mask[:, m]] - m * max(sizes)
        alone = torch.randperm(n, generator=torch.Generator().manual_seed(m + 1))
        assert torch.equal(rows, alone)  # every row once, in the order it gets alone
    assert plan.rows.tolist() == [[4, 4], [4, 3], [2, 0]]
    assert plan.full == [True, False, False]


def test_members_not_live_get_no_batch_and_draw_nothing():
    generators = _generators(5, 6)
    before = generators[1].get_state()
    plan = plan_epoch([8, 8], [0], 4, generators)
    assert plan.steps == [2, 0]
    assert not plan.mask[:, 1].any()
    assert torch.equal(generators[1].get_state(), before)


def test_noise_is_drawn_after_the_order_from_the_members_own_generator():
    plan = plan_epoch([6], [0], 3, _generators(3), noise_widths=[5, 2])
    g = torch.Generator().manual_seed(3)
    torch.randperm(6, generator=g)
    expected = torch.rand(2, 3, 7, generator=g)
    assert [u.shape for u in plan.uniforms] == [(1, 2, 3, 5), (1, 2, 3, 2)]
    assert torch.equal(torch.cat(plan.uniforms, -1)[0], expected)


def test_batch_norm_drops_a_one_row_last_batch():
    assert batches_per_epoch(9, 4, batch_norm=False) == 3
    assert batches_per_epoch(9, 4, batch_norm=True) == 2
    plan = plan_epoch([9], [0], 4, _generators(0), batch_norm=True)
    assert plan.steps == [2] and int(plan.mask.sum()) == 8
