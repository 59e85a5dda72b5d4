"""A packed backbone behind optional input embeddings, with one output per fit.

:class:`Network` holds what a plain :class:`~pricenet.nn.packed.PackedMLP` is not: an
embedding of the numeric inputs (:mod:`pricenet.nn.embeddings`) and learned embeddings of
the categorical codes, the last inputs (:mod:`pricenet.nn.categories`), before the first
layer, and a TabM backbone (:mod:`pricenet.nn.tabm`) whose k submodels it combines in the head's
space, so that every caller (evaluation, calibration, the Predictor, export, attributions)
sees ``[M, B, outputs]`` as from an MLP. Only the trainer's step asks for the submodels
(``submodels=True``: ``[M, B, k, outputs]``), to train on the mean of their losses.

Its interface is PackedMLP's: ``members``, ``with_members`` (and :class:`PackedFits`'s
``member``, ``from_members``),
the noise methods, ``forward(x, mask, *, direct)``. State keys: ``embedding.*``,
``categories.*`` and ``backbone.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pricenet.nn.categories import PackedCategoryEmbedding
from pricenet.nn.heads import Head
from pricenet.nn.packed import PackedFits
from pricenet.nn.tabm import combine_submodels


class Network(PackedFits, nn.Module):
    """``embedding`` and ``categories`` (each or None) then ``backbone``; a TabM's submodels
    combined by ``head``."""

    def __init__(
        self,
        backbone: nn.Module,
        embedding: nn.Module | None,
        head: Head,
        categories: PackedCategoryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.categories = categories
        self.coded = 0 if categories is None else len(categories.sizes)
        self.backbone = backbone
        self.members = backbone.members
        self.submodels = int(getattr(backbone, "k", 1))
        object.__setattr__(self, "head", head)  # a plain object: not a submodule

    # ------------------------------------------------------------------ fits

    def with_members(self, members: int) -> Network:
        """The same structure for ``members`` fits (default init, placeholder bins)."""
        embedding = None if self.embedding is None else self.embedding.with_members(members)
        categories = None if self.categories is None else self.categories.with_members(members)
        return Network(self.backbone.with_members(members), embedding, self.head, categories)

    def linears(self) -> list[nn.Module]:
        return self.backbone.linears()

    # ------------------------------------------------------------------ noise

    def noise_widths(self) -> list[int]:
        return self.backbone.noise_widths()

    def prepare_noise(self, uniforms: Sequence[Tensor]) -> list[Tensor]:
        return self.backbone.prepare_noise(uniforms)

    def set_noise(self, noise: Sequence[Tensor] | None) -> None:
        self.backbone.set_noise(noise)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        direct: bool = False,
        submodels: bool = False,
    ) -> Tensor:
        """``[M, B, in]`` (or ``[B, in]``) -> ``[M, B, outputs]``; ``submodels``: a TabM's
        ``[M, B, k, outputs]`` (for the training loss)."""
        if self.categories is not None:
            codes, x = x[..., -self.coded :], x[..., : -self.coded]
        if self.embedding is not None:
            x = self.embedding(x)
        if self.categories is not None:
            looked_up = self.categories(codes)
            if x.dim() == 2:
                x = x.expand(looked_up.shape[0], *x.shape)
            x = torch.cat([x, looked_up], dim=-1)
        out = self.backbone(x, mask, direct=direct)
        if self.submodels > 1 and not submodels:
            return combine_submodels(self.head, out)
        if self.submodels == 1 and out.dim() == 4:
            return out.squeeze(2)  # a TabM of one submodel
        return out


def repeat_rows(tensor: Tensor, k: int) -> Tensor:
    """Each row of ``[M, B, ...]`` ``k`` times in a row (targets and masks of submodels)."""
    return tensor if k == 1 else tensor.repeat_interleave(k, dim=1)
