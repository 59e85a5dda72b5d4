"""TEMPORARY shim: the Predictor members that export, serve and explain rely on.

The lead is adding these members to :class:`pricenet.predict.Predictor` (issues 9, 10, 13):
``feature_names``, ``label_name``, ``class_labels``, ``probability_module()``, ``validate()``
and the stored ``temperature``. Each function here uses the Predictor's own member when it
exists and falls back to an equivalent built from today's public attributes otherwise.

Delete this module once main's Predictor has them, replacing ``shim.x(predictor)`` with
``predictor.x`` (``grep -rn _predictor_shim src scripts tests``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

    from pricenet.predict import Predictor


def feature_names(predictor: Predictor) -> list[str]:
    """The raw input columns, in the order the model reads them."""
    if hasattr(predictor, "feature_names"):
        return list(predictor.feature_names)
    from pricenet.data import FEATURES

    return list(FEATURES)


def label_name(predictor: Predictor) -> str:
    """The name of the label column."""
    if hasattr(predictor, "label_name"):
        return str(predictor.label_name)
    from pricenet.data import LABEL

    return LABEL


def class_labels(predictor: Predictor) -> list[Any]:
    """The original class values, index k being probability column k."""
    if hasattr(predictor, "class_labels"):
        return list(predictor.class_labels)
    return list(range(predictor.head.num_classes))


def validate(predictor: Predictor, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 (n, F), ids)`` of ``frame``, or a DataError naming column and row."""
    if hasattr(predictor, "validate"):
        return predictor.validate(frame)
    from pricenet.predict import frame_to_table

    table = frame_to_table(frame)
    return table.features, table.ids


class _Probabilities(nn.Module):
    """Raw features -> scaled -> model -> outputs / T -> the head's class probabilities."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.model = predictor.model
        self.head = predictor.head
        self.register_buffer("mean", predictor.scaler.mean.detach().clone().float())
        self.register_buffer("std", predictor.scaler.std.detach().clone().float())
        self.temperature = float(getattr(predictor, "temperature", 1.0) or 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model((x - self.mean) / self.std)
        if self.temperature != 1.0:
            outputs = outputs / self.temperature
        return self.head.probabilities(outputs)


def probability_module(predictor: Predictor) -> nn.Module:
    """A module from raw float32 features (n, F) to calibrated class probabilities (n, K)."""
    if hasattr(predictor, "probability_module"):
        return predictor.probability_module()
    return _Probabilities(predictor).eval()
