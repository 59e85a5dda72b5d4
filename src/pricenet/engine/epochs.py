"""The epoch plan: which rows each member of a packed fit sees at each step, and its noise.

Pure: sizes, a batch size and each member's generator in, index and mask tensors out; no
model, no device. Member ``m``'s generator draws its batch order (``randperm``) and then its
noise for the whole epoch, so the plan of a member is the one it gets when trained alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def batches_per_epoch(rows: int, batch_size: int, batch_norm: bool) -> int:
    """How many optimizer steps a member with ``rows`` training rows takes per epoch."""
    k = math.ceil(rows / batch_size)
    if batch_norm and rows - (k - 1) * batch_size < 2:
        k -= 1  # BatchNorm needs 2 rows: drop a 1-row last batch, as torch would fail
    return k


@dataclass
class EpochPlan:
    """One epoch of a packed fit, on the CPU.

    ``index [S, M, W]``: flat row indices into the padded rows viewed ``[M * N, F]``;
    ``mask [S, M, W]``: which slots hold a real row; ``rows [S, M]``: real rows per batch;
    ``steps[m]``: member ``m``'s batches; ``full[s]``: step ``s`` has no padded slot;
    ``uniforms``: per noisy layer, the epoch's uniform draws ``[M, S, W, F_l]``.
    """

    index: Tensor
    mask: Tensor
    rows: Tensor
    steps: list[int]
    full: list[bool]
    uniforms: list[Tensor]


def plan_epoch(
    sizes: Sequence[int],
    live: Sequence[int],
    batch_size: int,
    generators: Sequence[torch.Generator],
    *,
    batch_norm: bool = False,
    noise_widths: Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
    padded: int | None = None,
) -> EpochPlan:
    """The plan for the ``live`` members (the others get no batch) of members with ``sizes``
    training rows each, padded to ``max(sizes)``.

    Member ``m``'s batches are consecutive ``batch_size`` slices of its permutation, so its
    slot ``s * W + j`` holds its permutation's entry ``s * batch_size + j`` (``W`` is
    ``batch_size`` unless every member has fewer rows, and then there is one batch).
    ``padded``: the rows each member is padded to (default ``max(sizes)``), when these
    members are some of a larger fit's.
    """
    count = len(sizes)
    n_max = max(max(sizes), 1) if padded is None else padded
    width = min(batch_size, n_max)
    steps = [0] * count
    perms: dict[int, Tensor] = {}
    for m in live:
        steps[m] = batches_per_epoch(sizes[m], batch_size, batch_norm)
        perms[m] = torch.randperm(sizes[m], generator=generators[m])
    total = max(max(steps), 1)
    index = torch.zeros(count, total * width, dtype=torch.long)
    mask = torch.zeros(count, total * width, dtype=torch.bool)
    for m, perm in perms.items():
        used = min(len(perm), steps[m] * batch_size)
        index[m, :used] = perm[:used] + m * n_max
        mask[m, :used] = True
    index = index.view(count, total, width).transpose(0, 1).contiguous()
    mask = mask.view(count, total, width).transpose(0, 1).contiguous()
    rows = mask.sum(2).to(dtype)
    full = (rows == width).all(1).tolist()
    uniforms: list[Tensor] = []
    if noise_widths:
        features = sum(noise_widths)
        # every slot is drawn when every member draws ``total`` full batches: no zeroing
        covered = all(steps[m] == total for m in range(count)) and min(sizes) >= width
        shape = (count, total, width, features)
        buffer = torch.empty(shape) if covered else torch.zeros(shape)
        for m, perm in perms.items():
            k, drawn = steps[m], min(batch_size, len(perm))  # what it draws alone
            if drawn == width:  # draw straight into its slice: what torch.rand would draw
                buffer[m, :k].uniform_(0.0, 1.0, generator=generators[m])
            else:
                buffer[m, :k, :drawn] = torch.rand(k, drawn, features, generator=generators[m])
        uniforms = [buffer] if len(noise_widths) == 1 else list(buffer.split(noise_widths, -1))
    return EpochPlan(index, mask, rows, steps, full, uniforms)
