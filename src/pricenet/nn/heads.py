"""What a loss implies: how targets are encoded, how many outputs, how outputs decode to a class.

| head          | outputs | target encoding            | decode                         |
|---------------|---------|----------------------------|--------------------------------|
| categorical   | K       | class index                | argmax (softmax for probs)     |
| ordinal       | K - 1   | [y > 0, y > 1, ..., y > K-2] | count of sigmoid(out) > 0.5    |
| coral         | 1 score + K-1 rank biases | as ordinal      | as ordinal (rank-consistent)   |
| regression    | 1       | class index as a float     | round and clip to 0..K-1       |

A head may also add an output layer to the model (:meth:`Head.output_layer`): the CORAL head
makes the model emit one shared score and adds K-1 learnable biases, ``logit_k = score + b_k``.

The ordinal, CORAL and regression heads read the classes as ranks (``needs_order``): a label
whose classes have no order is refused for them. An ensemble's members are combined in the
head's own space (:meth:`Head.combine`): averaged probabilities for the categorical head,
averaged P(y > k) for the ordinal ones, averaged scores for regression.
"""

from __future__ import annotations

import torch
from torch import nn


class Head:
    """Base: subclasses define ``num_outputs``, ``encode``, ``probabilities`` and ``decode``."""

    name: str = "head"
    needs_order: bool = False  # reads the classes as ranks

    def __init__(self, num_classes: int = 4) -> None:
        self.num_classes = num_classes

    def combine(self, outputs: torch.Tensor) -> torch.Tensor:
        """Members' outputs ``[M, ..., o]`` -> one output ``[..., o]`` whose probabilities and
        decoding are the ensemble's (a single member's outputs are returned unchanged)."""
        if outputs.shape[0] == 1:
            return outputs[0]
        return self._combine(outputs)

    def _combine(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.mean(dim=0)

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    @property
    def backbone_outputs(self) -> int:
        """How many outputs the network itself must produce (before :meth:`output_layer`)."""
        return self.num_outputs

    def output_layer(self) -> nn.Module | None:
        """An extra layer the model ends with, or None."""
        return None

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices (long) -> the tensor the loss compares the outputs with."""
        raise NotImplementedError

    def classes_of(self, target: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`encode`: encoded targets -> class indices (long)."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``[..., outputs]`` -> ``[..., num_classes]`` class probabilities."""
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> predicted class indices (long)."""
        return self.probabilities(outputs).argmax(dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes})"


class CategoricalHead(Head):
    """K logits trained with cross-entropy; softmax at inference."""

    name = "categorical"

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def classes_of(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs, dim=-1)

    def _combine(self, outputs: torch.Tensor) -> torch.Tensor:
        # the log of the mean probability, finite even where every member's underflows to 0
        # (an infinite logit has no gradient: temperature fitting would break on it)
        mean = torch.softmax(outputs, dim=-1).mean(dim=0)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=-1)


class OrdinalHead(Head):
    """K-1 sigmoid outputs for P(y > k), trained with binary cross-entropy; decoded by counting."""

    name = "ordinal"
    needs_order = True

    @property
    def num_outputs(self) -> int:
        return self.num_classes - 1

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        thresholds = torch.arange(self.num_classes - 1, device=y.device)
        return (y.unsqueeze(-1) > thresholds).to(torch.float32)

    def classes_of(self, target: torch.Tensor) -> torch.Tensor:
        return target.sum(-1).round().long()

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        above = torch.sigmoid(outputs)  # P(y > k), k = 0..K-2
        ones = torch.ones_like(above[..., :1])
        zeros = torch.zeros_like(above[..., :1])
        cumulative = torch.cat([ones, above, zeros], dim=-1)  # P(y > k-1) for k = 0..K
        # Independent sigmoids need not be monotone in k: clip the negative gaps, renormalize.
        probs = (cumulative[..., :-1] - cumulative[..., 1:]).clamp_min(0.0)
        return probs / probs.sum(dim=-1, keepdim=True)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return (outputs > 0).sum(dim=-1)

    def _combine(self, outputs: torch.Tensor) -> torch.Tensor:
        above = torch.sigmoid(outputs).mean(dim=0).clamp(1e-7, 1 - 1e-7)
        return torch.log(above) - torch.log1p(-above)


class RankBiases(nn.Module):
    """``logit_k = score + b_k`` for k = 0..K-2: one shared score, K-1 learnable biases."""

    def __init__(self, num_thresholds: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(1.0, -1.0, num_thresholds))

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        return score + self.bias


class CoralHead(OrdinalHead):
    """CORAL ordinal head (Cao et al., 2020): P(y > k) = sigmoid(score + b_k), shared score.

    Like :class:`OrdinalHead` it is trained with binary cross-entropy on ``[y > k]`` and
    decoded by counting, but the K-1 logits share every weight except their bias, so the
    predicted ranks are consistent and the head has far fewer parameters.
    """

    name = "coral"

    @property
    def backbone_outputs(self) -> int:
        return 1

    def output_layer(self) -> nn.Module:
        return RankBiases(self.num_classes - 1)


class RegressionHead(Head):
    """One output regressing the class index; decoded by rounding and clipping to 0..K-1."""

    name = "regression"
    needs_order = True

    @property
    def num_outputs(self) -> int:
        return 1

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(torch.float32).unsqueeze(-1)

    def classes_of(self, target: torch.Tensor) -> torch.Tensor:
        return target.squeeze(-1).round().long()

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """One-hot on the decoded class: a regression head has no calibrated probabilities."""
        return torch.nn.functional.one_hot(self.decode(outputs), self.num_classes).to(outputs.dtype)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1).round().clamp(0, self.num_classes - 1).long()
