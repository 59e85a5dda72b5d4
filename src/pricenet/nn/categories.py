"""Learned embeddings of categorical features with many values, one table per fit.

A categorical feature with more categories than ``data.category_embedding.above`` reaches
the network as one code column (:mod:`pricenet.tables.prep`: the value's position in its
categories, the ``<unknown>`` slot after them) instead of a one-hot block. Here each code
picks a row of a learned table, ``d_embedding`` values, as ``torch.nn.Embedding`` does, for
every fit at once: the tables of all fits and features are one parameter ``[M, V, d]`` (``V``
the features' sizes summed), and a lookup is one ``embedding`` call on its ``[M * V, d]``
view, so the exported graph is a single Gather. A code outside its feature's range (only a
hand-made input can hold one) is clamped into it.

Initialisation: uniform in ``+-1/sqrt(d)`` (the rtdl projects' categorical embeddings), each
fit from its own generator, so fit ``m`` starts the same in any packing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pricenet.nn.packed import PackedFits


class PackedCategoryEmbedding(PackedFits, nn.Module):
    """``[M, B, C]`` float codes (or ``[B, C]``, for every fit) -> ``[M, B, C * d]``: each of
    the ``C`` features' codes looked up in fit ``m``'s own table, feature by feature.

    State: ``weight`` ``[M, sum(sizes), d]`` (feature ``j``'s rows start at the sum of the
    sizes before it).
    """

    def __init__(self, members: int, sizes: Sequence[int], d_embedding: int) -> None:
        super().__init__()
        if not sizes or any(int(s) < 1 for s in sizes) or d_embedding < 1:
            raise ValueError("sizes and d_embedding must be positive, with one size at least")
        self.members = members
        self.sizes = tuple(int(s) for s in sizes)
        self.d_embedding = d_embedding
        total = sum(self.sizes)
        self.weight = nn.Parameter(torch.empty(members, total, d_embedding))
        starts = [0, *itertools.accumulate(self.sizes)][:-1]
        self.register_buffer("starts", torch.tensor(starts), persistent=False)
        self.register_buffer("highest", torch.tensor(self.sizes) - 1, persistent=False)
        if self.weight.device.type != "meta":
            self.init_members()

    @property
    def out_features(self) -> int:
        return len(self.sizes) * self.d_embedding

    def with_members(self, members: int) -> PackedCategoryEmbedding:
        """The same structure for ``members`` fits (a fresh init)."""
        return PackedCategoryEmbedding(members, self.sizes, self.d_embedding).to(self.weight.device)

    @torch.no_grad()
    def init_members(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """Every fit's table uniform in ``+-1/sqrt(d)``, from ``generators[m]`` (None: torch's
        global RNG)."""
        if generators is not None and len(generators) != self.members:
            raise ValueError(f"{self.members} members but {len(generators)} generators")
        bound = 1 / math.sqrt(self.d_embedding)
        for m in range(self.members):
            generator = None if generators is None else generators[m]
            table = torch.empty(self.weight.shape[1:]).uniform_(-bound, bound, generator=generator)
            self.weight[m].copy_(table)

    def forward(self, codes: Tensor) -> Tensor:
        # the fits from the weight, not ``members``: a trainer may hold only the live fits
        fits, total = self.weight.shape[0], self.weight.shape[1]
        if codes.dim() == 2:
            codes = codes.expand(fits, *codes.shape)
        index = torch.minimum(codes.long().clamp(min=0), self.highest) + self.starts
        index = index + torch.arange(fits, device=codes.device).view(fits, 1, 1) * total
        rows = nn.functional.embedding(index, self.weight.reshape(-1, self.d_embedding))
        return rows.flatten(-2)  # [M, B, C, d] -> [M, B, C * d]

    def extra_repr(self) -> str:
        return f"members={self.members}, sizes={list(self.sizes)}, d_embedding={self.d_embedding}"
