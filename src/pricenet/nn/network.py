"""A packed backbone behind optional numeric embeddings, with one output per fit.

:class:`Network` holds what a plain :class:`~pricenet.nn.packed.PackedMLP` is not: an
embedding of the numeric inputs (:mod:`pricenet.nn.embeddings`) before the first layer,
and a TabM backbone (:mod:`pricenet.nn.tabm`) whose k submodels it combines in the head's
space, so that every caller (evaluation, calibration, the Predictor, export, attributions)
sees ``[M, B, outputs]`` as from an MLP. Only the trainer's step asks for the submodels
(``submodels=True``: ``[M, B, k, outputs]``), to train on the mean of their losses.

Its interface is PackedMLP's: ``members``, ``with_members`` (and :class:`PackedFits`'s
``member``, ``from_members``),
the noise methods, ``forward(x, mask, *, direct)``. State keys: ``embedding.*`` and
``backbone.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pricenet.nn.heads import Head
from pricenet.nn.packed import PackedFits
from pricenet.nn.tabm import combine_submodels


class Network(PackedFits, nn.Module):
    """``embedding`` (or None) then ``backbone``; a TabM's submodels combined by ``head``."""

    def __init__(self, backbone: nn.Module, embedding: nn.Module | None, head: Head) -> None:
        super().__init__()
        self.embedding = embedding
        self.backbone = backbone
        self.members = backbone.members
        self.submodels = int(getattr(backbone, "k", 1))
        object.__setattr__(self, "head", head)  # a plain object: not a submodule

    # ------------------------------------------------------------------ fits

    def with_members(self, members: int) -> Network:
        """The same structure for ``members`` fits (default init, placeholder bins)."""
        embedding = None if self.embedding is None else self.embedding.with_members(members)
        return Network(self.backbone.with_members(members), embedding, self.head)

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
        if self.embedding is not None:
            x = self.embedding(x)
        out = self.backbone(x, mask, direct=direct)
        if self.submodels > 1 and not submodels:
            return combine_submodels(self.head, out)
        if self.submodels == 1 and out.dim() == 4:
            return out.squeeze(2)  # a TabM of one submodel
        return out


def repeat_rows(tensor: Tensor, k: int) -> Tensor:
    """Each row of ``[M, B, ...]`` ``k`` times in a row (targets and masks of submodels)."""
    return tensor if k == 1 else tensor.repeat_interleave(k, dim=1)
