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

The :class:`Preprocessor` holds the fitted statistics (the checkpoint's plain, checked
state); :class:`PreprocessModule`, built from one or more of them, is the only code that
applies them, in torch, for training, prediction, export and attributions alike. For the
phone-price schema (all numeric, nothing missing) this is exactly the old scaler, bit for
bit: mean and std are float32 reductions in torch, and ``(x - mean) / std`` is float32.
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
UNKNOWN_CODE = -1  # a category code: the value is not one of the feature's categories
MISSING_CODE = -2  # a category code: the value is missing
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

    def module(self) -> PreprocessModule:
        """This preprocessing as a torch module (see :class:`PreprocessModule`)."""
        return PreprocessModule([self])

    def transform(self, frame: pd.DataFrame | Table) -> np.ndarray:
        """The (n, width) float32 model input for validated rows (a DataError for a row
        the policies refuse)."""
        return self.module().transform(frame)[0].numpy()

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


class PreprocessModule(torch.nn.Module):
    """The fitted preprocessing of one or more members as one traceable torch module: the
    only implementation of impute, standardize, one-hot and was-missing.

    ``forward(features, codes)`` takes the raw numeric-kind features (float32 ``(n, k)`` in
    schema order, NaN for missing) and, when the schema has categorical features, their
    codes (int64 ``(n, C)``: the value's position in its ``categories``,
    :data:`UNKNOWN_CODE` outside them, :data:`MISSING_CODE` missing) and returns every
    member's model input ``(members, n, width)`` in :class:`Preprocessor`'s layout. Training,
    :class:`~pricenet.inference.predictor.Predictor`, export and attributions all run it.
    :meth:`refused` marks the rows the policies refuse (an unknown category where the schema's
    ``unknown`` is error, a missing category under ``missing=error``): :meth:`transform`
    raises for them, a graph that cannot raise answers them with NaN.
    """

    def __init__(self, preprocessors: Sequence[Preprocessor]) -> None:
        super().__init__()
        first = preprocessors[0]
        layout = lambda p: (  # noqa: E731
            p.numeric_names,
            [(c.name, c.categories, c.unknown) for c in p.categorical],
            p.indicators,
            p.missing,
        )
        for m, prep in enumerate(preprocessors):
            if layout(prep) != layout(first):  # possible only in a crafted checkpoint
                raise ConfigError(
                    f"preprocessors[{m}]: its inputs (features, categories, was-missing "
                    "columns, missing policy) differ from preprocessors[0]'s"
                )
        self.numeric_names = first.numeric_names
        self.categorical = first.categorical
        self.impute = first.missing == "impute"
        numeric = list(first.numeric_names)
        categorical = [c.name for c in first.categorical]
        # (is categorical, column) per was-missing input, in the preprocessor's order
        self.indicators = [
            (name in categorical, (categorical if name in categorical else numeric).index(name))
            for name in first.indicators
        ]
        stack = lambda key: torch.from_numpy(  # noqa: E731
            np.stack([getattr(p, key) for p in preprocessors])
        ).unsqueeze(1)
        self.register_buffer("mean", stack("numeric_mean"))  # [members, 1, k]
        self.register_buffer("std", stack("numeric_std"))
        self.register_buffer("fill", stack("numeric_fill"))
        fills = [[c.categories.index(c.fill) for c in p.categorical] for p in preprocessors]
        self.register_buffer(
            "category_fill",
            torch.tensor(fills, dtype=torch.int64).view(len(preprocessors), 1, len(categorical)),
        )

    def forward(self, features: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        raw = features.unsqueeze(0)  # [1, n, k]
        x = (torch.where(torch.isnan(raw), self.fill, raw) - self.mean) / self.std
        blocks = [x]
        if self.categorical:
            assert codes is not None, "categorical features need their codes"
            absent = (codes == MISSING_CODE).unsqueeze(0)
            filled = torch.where(absent, self.category_fill, codes.unsqueeze(0))
            for j, c in enumerate(self.categorical):
                column = filled[..., j : j + 1]  # [members, n, 1]
                size = len(c.categories)
                if c.unknown:
                    column = torch.where(column == UNKNOWN_CODE, size, column)
                slots = torch.arange(c.width, device=codes.device)
                blocks.append((column == slots).to(x.dtype))  # an unknown refused value: zeros
        if self.indicators:
            gaps = [
                codes[:, j] == MISSING_CODE if is_categorical else torch.isnan(features[:, j])
                for is_categorical, j in self.indicators
            ]
            gaps = torch.stack(gaps, dim=1).to(x.dtype).unsqueeze(0)
            blocks.append(gaps.expand(x.shape[0], -1, -1))
        return torch.cat(blocks, dim=-1) if len(blocks) > 1 else x

    def refused(self, codes: torch.Tensor | None) -> torch.Tensor | None:
        """Per row, whether the policies refuse it; None when no row can be refused."""
        if not self.categorical or codes is None:
            return None
        bad = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
        for j, c in enumerate(self.categorical):
            if not c.unknown:
                bad = bad | (codes[:, j] == UNKNOWN_CODE)
            if not self.impute:
                bad = bad | (codes[:, j] == MISSING_CODE)
        return bad

    # ---------------------------------------------------------------- frames

    def inputs(self, frame: pd.DataFrame | Table) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward``'s inputs for validated rows: features and (categorical schemas) codes;
        a DataError names the first value the policies refuse."""
        frame = frame.frame if isinstance(frame, Table) else frame
        features = torch.from_numpy(
            np.array(frame[list(self.numeric_names)].to_numpy(dtype=np.float32), order="C")
        )
        absent = torch.isnan(features).any(dim=0)
        if absent.any() and not self.impute:
            name = self.numeric_names[int(absent.to(torch.uint8).argmax())]
            raise DataError(f"column {name!r}: missing values need data.missing=impute")
        if not self.categorical:
            return features, None
        columns = []
        for c in self.categorical:
            column = frame[c.name].astype(object)
            gone = column.isna().to_numpy(dtype=bool)
            if gone.any() and not self.impute:
                raise DataError(f"column {c.name!r}: missing values need data.missing=impute")
            codes = pd.Index(c.categories, dtype=object).get_indexer(column.to_numpy(dtype=object))
            codes[gone] = MISSING_CODE
            outside = codes == UNKNOWN_CODE
            if outside.any() and not c.unknown:
                row = int(np.argmax(outside))
                raise DataError(
                    f"column {c.name!r}, row {row + 1}: {shown(column.iloc[row])} is not "
                    "one of the categories"
                )
            columns.append(codes.astype(np.int64))
        return features, torch.from_numpy(np.stack(columns, axis=1))

    @torch.no_grad()
    def transform(self, frame: pd.DataFrame | Table) -> torch.Tensor:
        """Every member's model input ``(members, n, width)`` for validated rows, or a
        DataError: a refused value, or a finite value that overflows float32 once
        standardized."""
        frame = frame.frame if isinstance(frame, Table) else frame
        features, codes = self.inputs(frame)
        device = self.mean.device
        x = self(features.to(device), None if codes is None else codes.to(device))
        overflow = (~torch.isfinite(x[..., : len(self.numeric_names)])).any(dim=0)
        if overflow.any():
            row, col = (int(i) for i in overflow.nonzero()[0])
            raise DataError(
                f"column {self.numeric_names[col]!r}, row {row + 1}: "
                f"{frame[self.numeric_names[col]].iloc[row]:g} overflows float32 once "
                "standardized"
            )
        return x
