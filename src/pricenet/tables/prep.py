"""Table -> model input: impute, scale, one-hot or code; fitted on training rows only.

The output layout is ``[numeric | one-hot | was-missing | codes]``:

- the numeric-kind features (numeric, integer, binary) in schema order, each scaled by the
  ``scaler`` after a missing value is replaced by ``numeric_fill`` (its training mean):

  - ``standard``: ``(x - numeric_mean) / numeric_std`` (training mean and std; std 0 becomes 1);
  - ``none``: the raw value (stored as mean 0, std 1; what ``standardize=False`` always meant);
  - ``robust`` (RealMLP's): ``z = (x - median) / IQR``, then the smooth clipping
    ``z / sqrt(1 + (z / 3) ** 2)`` into (-3, 3); ``numeric_mean``/``numeric_std`` hold the
    median and the IQR (q75 - q25; an IQR of 0, a feature mostly one value, falls back to the
    std, and a std of 0 to 1);
  - ``quantile`` (TabM's): the training values plus small noise (``1e-5 * std`` per feature,
    seeded; it spreads tied values so a tie maps to the middle of its range) give
    ``max(min(n // 30, 1000), 10)`` quantile knots; a value is interpolated linearly between
    the knots' levels (cumulative probabilities), clamped at the ends, and mapped through the
    normal's quantile function (in float64), exactly as scikit-learn's
    ``QuantileTransformer(output_distribution="normal")`` fitted on those noisy values, clip
    included (|z| <= 5.2). ``numeric_mean``/``numeric_std`` hold the training mean and std:
    only the input limits and the export's probe rows read them. A feature constant on the
    training rows maps to 0;

  the robust and quantile statistics are taken over the present values only (a missing
  value is then imputed with the fill and scaled like any other);
- per categorical feature, one 0/1 column per category in ``categories`` order, plus a last
  ``<unknown>`` column when the schema maps unknown values; a missing value counts as the
  training mode (``fill``);
- one 0/1 was-missing column per feature that had missing values in the training rows
  (``indicators``), only under ``missing="impute"``;
- last, one column per categorical feature with more than ``embed_above`` categories
  (``embedded``): its code as a float, the value's position in ``categories`` (the
  ``<unknown>`` slot after them; a missing value counts as the fill). The network looks each
  code up in a learned table (:mod:`pricenet.nn.categories`) instead of reading a one-hot
  block as wide as the feature has values.

The :class:`Preprocessor` holds the fitted statistics (the checkpoint's plain, checked
state); :class:`PreprocessModule`, built from one or more of them, is the only code that
applies them, in torch, for training, prediction, export and attributions alike. For the
phone-price schema (all numeric, nothing missing) this is exactly the old scaler, bit for
bit: mean and std are float32 reductions in torch, and ``(x - mean) / std`` is float32.

State version 2 names the ``scaler`` and holds the quantile knots; a version-1 state (written
before scalers) loads as ``standard`` or ``none`` by its ``standardize``.
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

STATE_VERSION = 2
SCALERS = ("standard", "quantile", "robust", "none")
UNKNOWN_CODE = -1  # a category code: the value is not one of the feature's categories
MISSING_CODE = -2  # a category code: the value is missing
UNKNOWN_NAME = "<unknown>"
_STATE_KEYS = (
    "version",
    "scaler",
    "missing",
    "numeric",
    "mean",
    "std",
    "fill",
    "knots",
    "levels",
    "categorical",
    "indicators",
)
_STATE_KEYS_V1 = (  # before scalers: standardize true/false, no knots
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
QUANTILE_NOISE = 1e-5  # TabM's: the noise's std, here per feature in units of its std
QUANTILE_SEED = 0  # the noise is seeded: a fit on the same rows gives the same knots
QUANTILE_MAX_KNOTS = 1000  # max(min(n // 30, 1000), 10)
QUANTILE_BOUND = 1e-7 - np.spacing(1)  # scikit-learn's clip: |z| <= ppf(1 - 1e-7) = 5.199...
SOFT_CLIP = 3.0  # robust: z / sqrt(1 + (z / 3) ** 2)
SOFT_CLIP_SATURATION = 1e6  # |z| beyond: z / sqrt(...) is +-3 to float32 (and inf is not NaN)
_CATEGORICAL_KEYS = ("name", "categories", "unknown", "fill", "embedded")
EMBED_ABOVE = 16  # the default: a categorical feature with more categories is embedded


@dataclass(frozen=True)
class CategoricalEncoding:
    """One categorical feature's encoding: its categories, unknown slot and fill; a one-hot
    block, or (``embedded``) one code column a learned embedding reads."""

    name: str
    categories: tuple[str, ...]
    unknown: bool
    fill: str
    embedded: bool = False

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
        scaler: str,
        missing: str,
        knots: tuple[np.ndarray, ...] = (),
        levels: tuple[np.ndarray, ...] = (),
    ) -> None:
        self.numeric_names = numeric_names
        self.numeric_mean = numeric_mean.astype(np.float32)
        self.numeric_std = numeric_std.astype(np.float32)
        self.numeric_fill = numeric_fill.astype(np.float32)
        self.categorical = categorical
        self.indicators = indicators
        self.scaler = scaler
        self.missing = missing
        # quantile only: per numeric feature, its knots (strictly increasing raw values) and
        # their levels (cumulative probabilities), float64
        self.knots = tuple(k.astype(np.float64) for k in knots)
        self.levels = tuple(v.astype(np.float64) for v in levels)

    @property
    def standardize(self) -> bool:
        """Whether the numeric features are scaled at all (the key before ``scaler``)."""
        return self.scaler != "none"

    # ---------------------------------------------------------------- fit

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame | Table,
        schema: Schema,
        *,
        scaler: str | None = None,
        standardize: bool = True,
        missing: str = "error",
        indicators: Sequence[str] | None = None,
        embed_above: int | None = EMBED_ABOVE,
    ) -> Preprocessor:
        """Fit on the training rows ``frame`` (a validated table's frame, or the table).

        ``scaler`` is one of :data:`SCALERS` (see :func:`resolve_scaler` for ``standardize``,
        the older switch). A categorical feature with more than ``embed_above`` categories
        (None: never) gets a code column for a learned embedding instead of a one-hot block;
        the choice reads the schema only, so every fit of a run makes the same one.
        ``indicators`` names the columns that get a was-missing input; by
        default those with gaps in these rows. Fits that must share one input width (the
        members of a packed run) pass the same list: the columns with gaps anywhere in the
        table.
        """
        scaler = resolve_scaler(scaler, standardize)
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
        present = x.numpy().copy()  # NaN where missing: robust and quantile skip those
        if had_missing.any():
            x = torch.where(absent, fill, x)
        knots: tuple[np.ndarray, ...] = ()
        levels: tuple[np.ndarray, ...] = ()
        if scaler in ("standard", "quantile"):
            mean = x.mean(dim=0)
            # (no numeric column: no std to take, and torch would warn about it)
            std = x.std(dim=0, unbiased=False) if x.shape[1] else torch.ones(0, dtype=x.dtype)
            std = torch.where(std > 0, std, torch.ones_like(std))
        elif scaler == "robust":
            center, spread = robust_statistics(present)
            mean, std = torch.from_numpy(center), torch.from_numpy(spread)
        else:
            mean, std = torch.zeros(len(numeric)), torch.ones(len(numeric))
        if scaler == "quantile":
            knots, levels = quantile_knots(quantile_fit_values(present), fill.numpy())
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
            embedded = embed_above is not None and len(feature.categories) > embed_above
            encodings.append(
                CategoricalEncoding(
                    feature.name,
                    feature.categories,
                    feature.unknown == "map",
                    str(fill_value),
                    embedded,
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
            scaler=scaler,
            missing=missing,
            knots=knots,
            levels=levels,
        )

    # ---------------------------------------------------------------- transform

    @property
    def one_hot(self) -> tuple[CategoricalEncoding, ...]:
        """The categorical features encoded one-hot."""
        return tuple(c for c in self.categorical if not c.embedded)

    @property
    def embedded(self) -> tuple[CategoricalEncoding, ...]:
        """The categorical features given to a learned embedding, as the last inputs."""
        return tuple(c for c in self.categorical if c.embedded)

    @property
    def embedded_sizes(self) -> tuple[int, ...]:
        """Per embedded feature, how many codes it can take (categories, unknown slot)."""
        return tuple(c.width for c in self.embedded)

    @property
    def width(self) -> int:
        """Columns of the model input."""
        return (
            len(self.numeric_names)
            + sum(c.width for c in self.one_hot)
            + len(self.indicators)
            + len(self.embedded)
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        """A name per input column: ``ram``, ``color=red``, ``color=<unknown>``,
        ``ram:missing``, and an embedded feature's code column by the feature's name."""
        names = list(self.numeric_names)
        for c in self.one_hot:
            names += [f"{c.name}={cat}" for cat in c.categories]
            names += [f"{c.name}={UNKNOWN_NAME}"] if c.unknown else []
        names += [f"{name}:missing" for name in self.indicators]
        names += [c.name for c in self.embedded]
        return tuple(names)

    def input_limits(self, sigmas: float) -> tuple[np.ndarray, np.ndarray]:
        """Per numeric feature, the raw values within ``sigmas`` spreads of the training
        centre (float64): ``mean -/+ sigmas * std``.

        Under ``standard`` that is where the standardized input stays within ``sigmas`` of 0
        (beyond, it could overflow); under ``none``, +-sigmas raw. ``robust`` (median, IQR) and
        ``quantile`` (training mean, std) bound their inputs (|input| < 3, |input| <= 5.2), so
        nothing overflows there, but a value that far from anything seen in training is still
        a mistake to refuse or clamp; clamping it changes no quantile input (both ends
        saturate) and no robust input beyond float32's precision.
        """
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
            "scaler": self.scaler,
            "missing": self.missing,
            "numeric": list(self.numeric_names),
            "mean": torch.from_numpy(self.numeric_mean.copy()),
            "std": torch.from_numpy(self.numeric_std.copy()),
            "fill": torch.from_numpy(self.numeric_fill.copy()),
            "knots": [torch.from_numpy(k.copy()) for k in self.knots],
            "levels": [torch.from_numpy(v.copy()) for v in self.levels],
            "categorical": [
                {
                    "name": c.name,
                    "categories": list(c.categories),
                    "unknown": c.unknown,
                    "fill": c.fill,
                    "embedded": c.embedded,
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
        version = d.get("version") if isinstance(d, Mapping) else None
        legacy = version == 1 and not isinstance(version, bool)
        _keys(d, _STATE_KEYS_V1 if legacy else _STATE_KEYS, where)
        if not legacy and (version != STATE_VERSION or isinstance(version, bool)):
            raise ConfigError(f"{where}.version: {shown(version)} is not 1 or {STATE_VERSION}")
        if legacy:
            if not isinstance(d["standardize"], bool):
                raise ConfigError(
                    f"{where}.standardize: {shown(d['standardize'])} is not true or false"
                )
            scaler = "standard" if d["standardize"] else "none"
        else:
            scaler = d["scaler"]
            if not isinstance(scaler, str) or scaler not in SCALERS:
                raise ConfigError(
                    f"{where}.scaler: {shown(scaler)} is not one of {', '.join(SCALERS)}"
                )
        if d["missing"] not in MISSING_POLICIES:
            raise ConfigError(f"{where}.missing: {shown(d['missing'])} is not error or impute")
        numeric = _names(d["numeric"], f"{where}.numeric")
        arrays = {
            key: _vector(d[key], len(numeric), f"{where}.{key}") for key in ("mean", "std", "fill")
        }
        if (arrays["std"] <= 0).any():
            raise ConfigError(f"{where}.std: every value must be above 0")
        knots, levels = ((), ()) if legacy else _quantiles(d, scaler, len(numeric), where)
        if not isinstance(d["categorical"], list | tuple):
            raise ConfigError(f"{where}.categorical: expected a list")
        encodings = []
        for i, c in enumerate(d["categorical"]):
            at = f"{where}.categorical[{i}]"
            # (a state written before embeddings has no "embedded": all one-hot)
            old = isinstance(c, Mapping) and "embedded" not in c
            _keys(c, _CATEGORICAL_KEYS[:-1] if old else _CATEGORICAL_KEYS, at)
            name = _names([c["name"]], f"{at}.name")[0]
            categories = _names(c["categories"], f"{at}.categories")
            if not categories:
                raise ConfigError(f"{at}.categories: empty")
            if not isinstance(c["unknown"], bool):
                raise ConfigError(f"{at}.unknown: {shown(c['unknown'])} is not true or false")
            if c["fill"] not in categories:
                raise ConfigError(f"{at}.fill: {shown(c['fill'])} is not one of the categories")
            embedded = c.get("embedded", False)
            if not isinstance(embedded, bool):
                raise ConfigError(f"{at}.embedded: {shown(embedded)} is not true or false")
            encodings.append(
                CategoricalEncoding(name, categories, c["unknown"], c["fill"], embedded)
            )
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
            scaler=scaler,
            missing=d["missing"],
            knots=knots,
            levels=levels,
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


def resolve_scaler(scaler: str | None, standardize: bool = True) -> str:
    """The scaler a fit uses: ``scaler`` (one of :data:`SCALERS`), or with None the older
    switch's (``standardize``: standard, else none). ``standardize=false`` still means none
    with the default ``scaler=standard``; beside ``quantile`` or ``robust`` it is refused."""
    if scaler is None:
        return "standard" if standardize else "none"
    if not isinstance(scaler, str) or scaler not in SCALERS:
        raise ConfigError(f"data.scaler={shown(scaler)}: expected one of {', '.join(SCALERS)}")
    if not standardize and scaler in ("quantile", "robust"):
        raise ConfigError(
            f"data.standardize=false contradicts data.scaler={scaler}: "
            "drop data.standardize (data.scaler=none scales nothing)"
        )
    return scaler if standardize else "none"


def robust_statistics(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``present`` (rows x features, NaN where missing): the median and the
    spread, float64. The spread is the IQR (q75 - q25, numpy's linear percentiles, as
    scikit-learn's RobustScaler); an IQR of 0 (most rows one value: a rare binary flag) falls
    back to the std, and a std of 0 (a constant column) to 1. A column with no present value
    gets 0 and 1."""
    center = np.zeros(present.shape[1])
    spread = np.ones(present.shape[1])
    for j in range(present.shape[1]):
        column = present[:, j][~np.isnan(present[:, j])].astype(np.float64)
        if column.size == 0:
            continue
        low, high = np.percentile(column, [25, 75])
        center[j] = np.median(column)
        for candidate in (high - low, column.std()):
            if candidate > 0:
                spread[j] = candidate
                break
    return center, spread


def quantile_fit_values(present: np.ndarray) -> np.ndarray:
    """The values the quantile knots are fitted on (float64): TabM's recipe, the training
    values plus ``normal(0, 1e-5)`` noise, here scaled by each feature's std (TabM adds it
    unscaled, which rounds away on large features and swamps tiny ones). Seeded by
    :data:`QUANTILE_SEED`; NaN stays NaN."""
    x = present.astype(np.float64)
    observed = ~np.isnan(x)
    count = np.maximum(observed.sum(axis=0), 1)
    mean = np.where(observed, x, 0.0).sum(axis=0) / count
    std = np.sqrt((np.where(observed, x - mean, 0.0) ** 2).sum(axis=0) / count)
    noise = np.random.default_rng(QUANTILE_SEED).standard_normal(x.shape)
    return x + noise * (QUANTILE_NOISE * std)


def quantile_knots(
    values: np.ndarray, fill: np.ndarray
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per column of ``values`` (rows x features, NaN where missing), the knots and levels of
    scikit-learn's ``QuantileTransformer(n_quantiles=max(min(n // 30, 1000), 10),
    subsample=10**9)`` fitted on it: ``np.nanpercentile`` at evenly spaced levels, made
    non-decreasing, then deduplicated (a repeated knot keeps the mean of its first and last
    level: the value scikit-learn gives at it). A column with no present value gets the one
    knot ``fill``; one knot maps every value to level 0.5, the normal's 0."""
    n = values.shape[0]
    n_quantiles = min(max(min(n // 30, QUANTILE_MAX_KNOTS), 10), n)
    references = np.linspace(0.0, 1.0, n_quantiles)
    knots, levels = [], []
    for j in range(values.shape[1]):
        column = values[:, j][~np.isnan(values[:, j])]
        if column.size == 0:
            knots.append(np.array([float(fill[j])]))
            levels.append(np.array([0.5]))
            continue
        quantiles = np.maximum.accumulate(np.percentile(column, references * 100))
        unique, first, counts = np.unique(quantiles, return_index=True, return_counts=True)
        knots.append(unique)
        levels.append((references[first] + references[first + counts - 1]) / 2)
    return tuple(knots), tuple(levels)


def _quantiles(
    d: Mapping, scaler: str, width: int, where: str
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """A state's knots and levels: one float vector each per numeric feature under
    ``quantile`` (knots finite and strictly increasing, levels non-decreasing in [0, 1], of
    the knots' length, at most :data:`QUANTILE_MAX_KNOTS`), none otherwise."""
    expected = width if scaler == "quantile" else 0
    parts: dict[str, list[np.ndarray]] = {}
    for key in ("knots", "levels"):
        value = d[key]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}.{key}: expected a list, got {type(value).__name__}")
        if len(value) != expected:
            raise ConfigError(
                f"{where}.{key}: {len(value)} entries, expected {expected} "
                f"(one per numeric feature under scaler=quantile, else none)"
            )
        parts[key] = []
        for j, item in enumerate(value):
            at = f"{where}.{key}[{j}]"
            if not isinstance(item, torch.Tensor) or item.dim() != 1:
                raise ConfigError(f"{at}: expected a 1-d float tensor")
            length = int(item.shape[0])
            if not 1 <= length <= QUANTILE_MAX_KNOTS:
                raise ConfigError(f"{at}: {length} values, expected 1..{QUANTILE_MAX_KNOTS}")
            parts[key].append(_vector(item, length, at, np.float64))
    for j, (knots, levels) in enumerate(zip(parts["knots"], parts["levels"], strict=True)):
        if len(levels) != len(knots):
            raise ConfigError(f"{where}.levels[{j}]: {len(levels)} values for {len(knots)} knots")
        if (np.diff(knots) <= 0).any():
            raise ConfigError(f"{where}.knots[{j}]: not strictly increasing")
        if (np.diff(levels) < 0).any() or levels.min() < 0 or levels.max() > 1:
            raise ConfigError(f"{where}.levels[{j}]: not non-decreasing within [0, 1]")
    return tuple(parts["knots"]), tuple(parts["levels"])


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


def _vector(value: Any, width: int, where: str, dtype: type = np.float32) -> np.ndarray:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"{where}: expected a float tensor, got {got}")
    if tuple(value.shape) != (width,):
        raise ConfigError(f"{where}: shape {tuple(value.shape)}, expected ({width},)")
    array = value.detach().cpu().to(torch.float64).numpy().astype(dtype)
    if not np.isfinite(array).all():
        raise ConfigError(f"{where}: has NaN or infinite values")
    return array


# Wichura's AS241 (PPND16): the normal's quantile function to double precision, as rational
# functions of elementary operations, so it runs inside an exported graph (ONNX has no
# inverse of erf). Ascending powers; the region |p - 0.5| <= 0.425, and the tail region for
# p >= exp(-25) (sklearn's clip keeps p >= 1e-7, so the far-tail set is never needed).
_CENTRAL_NUM = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
_CENTRAL_DEN = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
_TAIL_NUM = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
_TAIL_DEN = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)


def _polynomial(coefficients: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    total = torch.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        total = total * x + c
    return total


def lower_normal_quantile(p: torch.Tensor) -> torch.Tensor:
    """The standard normal's quantile function for ``p`` in [1e-7, 0.5] (its lower half;
    values <= 0), by AS241: within 1e-15 of ``scipy.special.ndtri`` in float64."""
    q = p - 0.5
    central = q * _polynomial(_CENTRAL_NUM, 0.180625 - q * q)
    central = central / _polynomial(_CENTRAL_DEN, 0.180625 - q * q)
    r = torch.sqrt(-torch.log(p)) - 1.6
    tail = -_polynomial(_TAIL_NUM, r) / _polynomial(_TAIL_DEN, r)
    return torch.where(q >= -0.425, central, tail)


def normal_scores(
    x: torch.Tensor, knots: torch.Tensor, below: torch.Tensor, above: torch.Tensor
) -> torch.Tensor:
    """The quantile scaler: ``x`` ``(members, n, k)`` through each feature's knots
    ``(members, k, K)`` (non-decreasing, padded by repeating the last) to the normal's
    quantiles, float64. ``below`` holds the knots' levels and ``above`` one minus them (both
    exact in float64, so each tail keeps its precision): a value is placed among the knots
    (``torch.searchsorted``; in an ONNX export, which has no such operator, by counting the
    knots at or below it), its level interpolated linearly (clamped at the ends), clipped to
    [1e-7, 1 - 1e-7] as scikit-learn does, and mapped by the normal's quantile function."""
    v = x.to(knots.dtype).transpose(1, 2).contiguous()  # [members, k, n]
    if torch.onnx.is_in_onnx_export():
        count = (v.unsqueeze(-1) >= knots.unsqueeze(-2)).sum(dim=-1)
    else:
        count = torch.searchsorted(knots, v, right=True)
    j = (count - 1).clamp(0, knots.shape[-1] - 2)
    low, high = knots.gather(-1, j), knots.gather(-1, j + 1)
    gap = high - low
    t = ((v - low) / torch.where(gap > 0, gap, torch.ones_like(gap))).clamp(0, 1)
    lower = below.gather(-1, j) + t * (below.gather(-1, j + 1) - below.gather(-1, j))
    upper = above.gather(-1, j) + t * (above.gather(-1, j + 1) - above.gather(-1, j))
    z = lower_normal_quantile(torch.minimum(lower, upper).clamp(min=QUANTILE_BOUND))
    return torch.where(lower <= upper, z, -z).transpose(1, 2)


def soft_clip(z: torch.Tensor) -> torch.Tensor:
    """RealMLP's smooth clipping ``z / sqrt(1 + (z / 3) ** 2)``: about z near 0, +-3 far out."""
    z = z.clamp(-SOFT_CLIP_SATURATION, SOFT_CLIP_SATURATION)
    return z / torch.sqrt(1 + (z / SOFT_CLIP) ** 2)


def _padded(
    knots: list[tuple[np.ndarray, ...]], levels: list[tuple[np.ndarray, ...]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's knots and levels as two float64 tensors ``(members, k, K)``, each
    feature padded to ``K`` (at least 2) by repeating its last knot and level."""
    size = max([2, *(len(k) for member in knots for k in member)])

    def pad(vectors: tuple[np.ndarray, ...]) -> np.ndarray:
        rows = [np.pad(v, (0, size - len(v)), mode="edge") for v in vectors]
        return np.stack(rows) if rows else np.zeros((0, size))

    return (
        torch.from_numpy(np.stack([pad(member) for member in knots])),
        torch.from_numpy(np.stack([pad(member) for member in levels])),
    )


class PreprocessModule(torch.nn.Module):
    """The fitted preprocessing of one or more members as one traceable torch module: the
    only implementation of impute, scale, one-hot, was-missing and embedded codes.

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
            [(c.name, c.categories, c.unknown, c.embedded) for c in p.categorical],
            p.indicators,
            p.missing,
            p.scaler,
        )
        for m, prep in enumerate(preprocessors):
            if layout(prep) != layout(first):  # possible only in a crafted checkpoint
                raise ConfigError(
                    f"preprocessors[{m}]: its inputs (features, categories, embedded "
                    "categories, was-missing columns, missing policy, scaler) differ from "
                    "preprocessors[0]'s"
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
        self.scaler = first.scaler
        if self.scaler == "quantile":
            knots, levels = _padded(
                [p.knots for p in preprocessors], [p.levels for p in preprocessors]
            )
            self.register_buffer("knots", knots)  # [members, k, K] float64
            self.register_buffer("below", levels)
            self.register_buffer("above", 1 - levels)
        fills = [[c.categories.index(c.fill) for c in p.categorical] for p in preprocessors]
        self.register_buffer(
            "category_fill",
            torch.tensor(fills, dtype=torch.int64).view(len(preprocessors), 1, len(categorical)),
        )

    def forward(self, features: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        raw = features.unsqueeze(0)  # [1, n, k]
        x = torch.where(torch.isnan(raw), self.fill, raw)
        if self.scaler == "quantile":
            x = normal_scores(x, self.knots, self.below, self.above).to(features.dtype)
        else:
            x = (x - self.mean) / self.std
            if self.scaler == "robust":
                x = soft_clip(x)
        blocks, embedded = [x], []
        if self.categorical:
            assert codes is not None, "categorical features need their codes"
            absent = (codes == MISSING_CODE).unsqueeze(0)
            filled = torch.where(absent, self.category_fill, codes.unsqueeze(0))
            for j, c in enumerate(self.categorical):
                column = filled[..., j : j + 1]  # [members, n, 1]
                size = len(c.categories)
                if c.unknown:
                    column = torch.where(column == UNKNOWN_CODE, size, column)
                if c.embedded:  # an unknown refused value: code 0 (refused() marks the row)
                    embedded.append(column.clamp_min(0).to(x.dtype))
                    continue
                slots = torch.arange(c.width, device=codes.device)
                blocks.append((column == slots).to(x.dtype))  # an unknown refused value: zeros
        if self.indicators:
            gaps = [
                codes[:, j] == MISSING_CODE if is_categorical else torch.isnan(features[:, j])
                for is_categorical, j in self.indicators
            ]
            gaps = torch.stack(gaps, dim=1).to(x.dtype).unsqueeze(0)
            blocks.append(gaps.expand(x.shape[0], -1, -1))
        blocks += [column.expand(x.shape[0], -1, -1) for column in embedded]
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
        return self.checked(frame, features, codes)

    def checked(
        self,
        frame: pd.DataFrame,
        features: torch.Tensor,
        codes: torch.Tensor | None,
        start: int = 0,
    ) -> torch.Tensor:
        """``forward`` of :meth:`inputs`' rows ``start``.. of ``frame``, or a DataError for a
        finite value that overflows float32 once standardized (naming its row in ``frame``)."""
        device = self.mean.device
        x = self(features.to(device), None if codes is None else codes.to(device))
        overflow = (~torch.isfinite(x[..., : len(self.numeric_names)])).any(dim=0)
        if overflow.any():
            row, col = (int(i) for i in overflow.nonzero()[0])
            row += start
            raise DataError(
                f"column {self.numeric_names[col]!r}, row {row + 1}: "
                f"{frame[self.numeric_names[col]].iloc[row]:g} overflows float32 once "
                "standardized"
            )
        return x
