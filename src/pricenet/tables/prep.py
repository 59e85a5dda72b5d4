"""Table -> model input: impute, standardize, one-hot; fitted on training rows only.

The output layout is ``[numeric | one-hot | was-missing]``:

- the numeric-kind features (numeric, integer, binary) in schema order, each
  ``(x - numeric_mean) / numeric_std`` after a missing value is replaced by ``numeric_fill``
  (its training mean); ``std`` 0 becomes 1 and ``standardize=False`` means mean 0, std 1;
- per categorical feature, one 0/1 column per category in ``categories`` order, plus a last
  ``<unknown>`` column when the schema maps unknown values; a missing value counts as the
  training mode (``fill``);
- one 0/1 was-missing column per feature that had missing values in the training rows
  (``indicators``), only under ``missing="impute"``.

For the phone-price schema (all numeric, nothing missing) this is exactly today's scaler,
bit for bit: mean and std are float32 reductions in torch, as before. An ONNX exporter can
rebuild the transform from ``numeric_names``, ``numeric_mean``, ``numeric_std``,
``numeric_fill``, ``categorical`` (name, categories, unknown slot, fill) and ``indicators``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from pricenet.errors import ConfigError, DataError, shown
from pricenet.tables.schema import Schema
from pricenet.tables.table import Table
from pricenet.tables.validate import MISSING_POLICIES

STATE_VERSION = 1
UNKNOWN_NAME = "<unknown>"
_STATE_KEYS = (
    "version",
    "standardize",
    "missing",
    "numeric",
    "mean",
    "std",
    "fill",
    "categorical",
    "indicators",
)
_CATEGORICAL_KEYS = ("name", "categories", "unknown", "fill")


@dataclass(frozen=True)
class CategoricalEncoding:
    """One categorical feature's one-hot block: its categories, unknown slot and fill."""

    name: str
    categories: tuple[str, ...]
    unknown: bool
    fill: str

    @property
    def width(self) -> int:
        return len(self.categories) + int(self.unknown)


class Preprocessor:
    """A fitted transform from a validated table's frame to a float32 model input."""

    def __init__(
        self,
        *,
        numeric_names: tuple[str, ...],
        numeric_mean: np.ndarray,
        numeric_std: np.ndarray,
        numeric_fill: np.ndarray,
        categorical: tuple[CategoricalEncoding, ...],
        indicators: tuple[str, ...],
        standardize: bool,
        missing: str,
    ) -> None:
        self.numeric_names = numeric_names
        self.numeric_mean = numeric_mean.astype(np.float32)
        self.numeric_std = numeric_std.astype(np.float32)
        self.numeric_fill = numeric_fill.astype(np.float32)
        self.categorical = categorical
        self.indicators = indicators
        self.standardize = standardize
        self.missing = missing

    # ---------------------------------------------------------------- fit

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame | Table,
        schema: Schema,
        *,
        standardize: bool = True,
        missing: str = "error",
        indicators: Sequence[str] | None = None,
    ) -> Preprocessor:
        """Fit on the training rows ``frame`` (a validated table's frame, or the table).

        ``indicators`` names the columns that get a was-missing input; by default those with
        gaps in these rows. Fits that must share one input width (the members of a packed
        run) pass the same list: the columns with gaps anywhere in the table.
        """
        if missing not in MISSING_POLICIES:
            raise ConfigError(f"data.missing={shown(missing)}: expected one of error, impute")
        frame = frame.frame if isinstance(frame, Table) else frame
        if len(frame) == 0:
            raise DataError("no training rows to fit the preprocessing on")
        numeric = tuple(f.name for f in schema.features if f.numeric)
        x = torch.from_numpy(np.array(frame[list(numeric)].to_numpy(dtype=np.float32), order="C"))
        absent = torch.isnan(x)
        had_missing = absent.any(dim=0).numpy()
        if missing == "error" and had_missing.any():
            name = numeric[int(np.argmax(had_missing))]
            raise DataError(f"column {name!r}: missing values need data.missing=impute")
        fill = torch.nan_to_num(torch.nanmean(x, dim=0), nan=0.0)
        if had_missing.any():
            x = torch.where(absent, fill, x)
        if standardize:
            mean = x.mean(dim=0)
            std = x.std(dim=0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))
        else:
            mean, std = torch.zeros(len(numeric)), torch.ones(len(numeric))
        gaps = [n for n, m in zip(numeric, had_missing, strict=True) if m]
        encodings = []
        for feature in schema.features:
            if feature.kind != "categorical":
                continue
            column = frame[feature.name].astype(object)
            present = column[column.notna()]
            if missing == "error" and len(present) < len(column):
                raise DataError(f"column {feature.name!r}: missing values need data.missing=impute")
            if len(present) < len(column):
                gaps.append(feature.name)
            known = present[present.isin(feature.categories)]
            counts = known.value_counts()
            fill_value = (
                min(counts.index[counts == counts.max()], key=feature.categories.index)
                if len(counts)
                else feature.categories[0]
            )
            encodings.append(
                CategoricalEncoding(
                    feature.name, feature.categories, feature.unknown == "map", str(fill_value)
                )
            )
        order = {f.name: i for i, f in enumerate(schema.features)}
        return cls(
            numeric_names=numeric,
            numeric_mean=mean.numpy(),
            numeric_std=std.numpy(),
            numeric_fill=fill.numpy(),
            categorical=tuple(encodings),
            indicators=tuple(
                sorted(gaps if indicators is None else indicators, key=order.__getitem__)
            ),
            standardize=standardize,
            missing=missing,
        )

    # ---------------------------------------------------------------- transform

    @property
    def width(self) -> int:
        """Columns of the model input."""
        return (
            len(self.numeric_names) + sum(c.width for c in self.categorical) + len(self.indicators)
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        """A name per input column: ``ram``, ``color=red``, ``color=<unknown>``, ``ram:missing``."""
        names = list(self.numeric_names)
        for c in self.categorical:
            names += [f"{c.name}={cat}" for cat in c.categories]
            names += [f"{c.name}={UNKNOWN_NAME}"] if c.unknown else []
        names += [f"{name}:missing" for name in self.indicators]
        return tuple(names)

    def input_limits(self, sigmas: float) -> tuple[np.ndarray, np.ndarray]:
        """Per numeric feature, the raw values whose standardized input lies within
        ``sigmas`` of 0 (float64): ``mean -/+ sigmas * std``."""
        mean = self.numeric_mean.astype(np.float64)
        spread = sigmas * self.numeric_std.astype(np.float64)
        return mean - spread, mean + spread

    def transform(self, frame: pd.DataFrame | Table) -> np.ndarray:
        """The (n, width) float32 model input for validated rows."""
        frame = frame.frame if isinstance(frame, Table) else frame
        n = len(frame)
        x = torch.from_numpy(
            np.array(frame[list(self.numeric_names)].to_numpy(dtype=np.float32), order="C")
        )
        absent = torch.isnan(x)
        if absent.any():
            if self.missing != "impute":
                col = int(absent.any(dim=0).to(torch.uint8).argmax())
                raise DataError(
                    f"column {self.numeric_names[col]!r}: missing values need data.missing=impute"
                )
            x = torch.where(absent, torch.from_numpy(self.numeric_fill), x)
        x = (x - torch.from_numpy(self.numeric_mean)) / torch.from_numpy(self.numeric_std)
        overflow = ~torch.isfinite(x)
        if overflow.any():  # finite float32 values can overflow once standardized
            row, col = (int(i) for i in overflow.nonzero()[0])
            raise DataError(
                f"column {self.numeric_names[col]!r}, row {row + 1}: "
                f"{frame[self.numeric_names[col]].iloc[row]:g} overflows float32 once "
                "standardized"
            )
        blocks = [x.numpy()]
        missing_of: dict[str, np.ndarray] = {
            name: absent[:, i].numpy() for i, name in enumerate(self.numeric_names)
        }
        for c in self.categorical:
            column = frame[c.name].astype(object)
            gone = column.isna().to_numpy(dtype=bool)
            missing_of[c.name] = gone
            if gone.any() and self.missing != "impute":
                raise DataError(f"column {c.name!r}: missing values need data.missing=impute")
            filled = column.where(~gone, c.fill).to_numpy(dtype=object)
            codes = pd.Index(c.categories, dtype=object).get_indexer(filled).astype(np.int64)
            unknown = codes < 0
            if unknown.any():
                if not c.unknown:
                    row = int(np.argmax(unknown))
                    raise DataError(
                        f"column {c.name!r}, row {row + 1}: {shown(column.iloc[row])} is not "
                        "one of the categories"
                    )
                codes[unknown] = len(c.categories)
            block = np.zeros((n, c.width), dtype=np.float32)
            block[np.arange(n), codes] = 1.0
            blocks.append(block)
        for name in self.indicators:
            blocks.append(missing_of[name].astype(np.float32)[:, None])
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "version": STATE_VERSION,
            "standardize": self.standardize,
            "missing": self.missing,
            "numeric": list(self.numeric_names),
            "mean": torch.from_numpy(self.numeric_mean.copy()),
            "std": torch.from_numpy(self.numeric_std.copy()),
            "fill": torch.from_numpy(self.numeric_fill.copy()),
            "categorical": [
                {
                    "name": c.name,
                    "categories": list(c.categories),
                    "unknown": c.unknown,
                    "fill": c.fill,
                }
                for c in self.categorical
            ],
            "indicators": list(self.indicators),
        }

    @classmethod
    def from_state_dict(cls, d: Any, where: str, schema: Schema | None = None) -> Preprocessor:
        """Rebuild from :meth:`state_dict` output, checking every key, type and shape.

        The state may come from an untrusted checkpoint: any problem is a
        :class:`ConfigError` naming ``where`` and the key. With ``schema``, the state must
        also match it (numeric features in order, categories, unknown slots).
        """
        _keys(d, _STATE_KEYS, where)
        if d["version"] != STATE_VERSION or isinstance(d["version"], bool):
            raise ConfigError(f"{where}.version: {shown(d['version'])} is not {STATE_VERSION}")
        if not isinstance(d["standardize"], bool):
            raise ConfigError(
                f"{where}.standardize: {shown(d['standardize'])} is not true or false"
            )
        if d["missing"] not in MISSING_POLICIES:
            raise ConfigError(f"{where}.missing: {shown(d['missing'])} is not error or impute")
        numeric = _names(d["numeric"], f"{where}.numeric")
        arrays = {
            key: _vector(d[key], len(numeric), f"{where}.{key}") for key in ("mean", "std", "fill")
        }
        if (arrays["std"] <= 0).any():
            raise ConfigError(f"{where}.std: every value must be above 0")
        if not isinstance(d["categorical"], list | tuple):
            raise ConfigError(f"{where}.categorical: expected a list")
        encodings = []
        for i, c in enumerate(d["categorical"]):
            at = f"{where}.categorical[{i}]"
            _keys(c, _CATEGORICAL_KEYS, at)
            name = _names([c["name"]], f"{at}.name")[0]
            categories = _names(c["categories"], f"{at}.categories")
            if not categories:
                raise ConfigError(f"{at}.categories: empty")
            if not isinstance(c["unknown"], bool):
                raise ConfigError(f"{at}.unknown: {shown(c['unknown'])} is not true or false")
            if c["fill"] not in categories:
                raise ConfigError(f"{at}.fill: {shown(c['fill'])} is not one of the categories")
            encodings.append(CategoricalEncoding(name, categories, c["unknown"], c["fill"]))
        all_names = list(numeric) + [c.name for c in encodings]
        if len(set(all_names)) != len(all_names):
            raise ConfigError(f"{where}: a feature appears more than once")
        indicators = _names(d["indicators"], f"{where}.indicators")
        stray = [n for n in indicators if n not in all_names]
        if stray:
            raise ConfigError(f"{where}.indicators: {shown(stray[0])} is not a feature")
        if indicators and d["missing"] != "impute":
            raise ConfigError(f"{where}.indicators: only under missing=impute")
        prep = cls(
            numeric_names=numeric,
            numeric_mean=arrays["mean"],
            numeric_std=arrays["std"],
            numeric_fill=arrays["fill"],
            categorical=tuple(encodings),
            indicators=indicators,
            standardize=d["standardize"],
            missing=d["missing"],
        )
        if schema is not None:
            prep.check_schema(schema, where)
        return prep

    def check_schema(self, schema: Schema, where: str) -> None:
        """Refuse a preprocessing state that does not fit ``schema``."""
        numeric = tuple(f.name for f in schema.features if f.numeric)
        if numeric != self.numeric_names:
            raise ConfigError(
                f"{where}.numeric: {list(self.numeric_names)} do not match the schema's "
                f"numeric features {list(numeric)}"
            )
        expected = [
            (f.name, f.categories, f.unknown == "map")
            for f in schema.features
            if f.kind == "categorical"
        ]
        got = [(c.name, c.categories, c.unknown) for c in self.categorical]
        if got != expected:
            raise ConfigError(f"{where}.categorical: does not match the schema's categories")


def _keys(d: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    for key in d:
        if key not in keys:
            raise ConfigError(f"{where}.{str(key)[:60]}: unknown key")
    for key in keys:
        if key not in d:
            raise ConfigError(f"{where}.{key}: missing")


def _names(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        raise ConfigError(f"{where}: expected a list of names, got {type(values).__name__}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}[{i}]: {shown(v)} is not a non-empty string")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: a name appears more than once")
    return tuple(values)


def _vector(value: Any, width: int, where: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"{where}: expected a float tensor, got {got}")
    if tuple(value.shape) != (width,):
        raise ConfigError(f"{where}: shape {tuple(value.shape)}, expected ({width},)")
    array = value.detach().cpu().to(torch.float32).numpy().copy()
    if not np.isfinite(array).all():
        raise ConfigError(f"{where}: has NaN or infinite values")
    return array
