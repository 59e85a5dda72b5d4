"""The schema of a table: its features (name, kind, range, categories), label and classes.

A :class:`Schema` is plain data. ``to_dict`` gives only str/int/float/bool/list/dict/None, so it
can be stored in a checkpoint or written as YAML; ``from_dict`` checks every key, type and value
strictly, because it also reads untrusted checkpoint content.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from pricenet.errors import ConfigError, DataError, first_line
from pricenet.errors import shown as quoted
from pricenet.tables.cells import describe_text, is_missing, number_text, shown, to_float

Kind = Literal["numeric", "integer", "binary", "categorical"]
Unknown = Literal["error", "map"]
KINDS: tuple[str, ...] = get_args(Kind)
UNKNOWN_POLICIES: tuple[str, ...] = get_args(Unknown)
_NUMERIC_KINDS = ("numeric", "integer", "binary")
_FEATURE_KEYS = ("name", "kind", "low", "high", "categories", "unknown")
_SCHEMA_KEYS = ("features", "label", "classes", "ordered", "id")


def _check_keys(
    d: Mapping, allowed: tuple[str, ...], required: tuple[str, ...], where: str
) -> None:
    """No key outside ``allowed`` and every one of ``required``: else a ConfigError."""
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected {', '.join(allowed)})")
    for key in required:
        if key not in d:
            raise ConfigError(f"{where}.{key}: missing")


def first_repeat(values: Iterable[Any]) -> tuple[int, Any] | None:
    """``(index, value)`` of the first value seen before, or None: one pass, so 100k names
    are checked as fast as ten (a ``list.count`` per name took minutes)."""
    seen: set[Any] = set()
    for i, value in enumerate(values):
        if value in seen:
            return i, value
        seen.add(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"{quoted(name)} is not a string"
    if not name or name != name.strip():
        return f"{quoted(name)}: a column name must be non-empty, without spaces around it"
    return None


@dataclass(frozen=True)
class Feature:
    """One input column: its ``kind``, optional ``[low, high]`` range and categories.

    ``numeric`` is any finite number, ``integer`` a whole number, ``binary`` 0 or 1 and
    ``categorical`` one of ``categories`` (text); ``unknown="map"`` lets a categorical column
    take values outside ``categories`` (encoded as "unknown") instead of refusing them.
    """

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    unknown: Unknown = "error"

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ConfigError(f"feature {quoted(self.name)}: {problem}")

    @property
    def numeric(self) -> bool:
        """True for the kinds held as numbers (numeric, integer, binary)."""
        return self.kind in _NUMERIC_KINDS

    def problem(self) -> str | None:
        """What is inconsistent in this feature, as ``<key>...: <why>``, or None."""
        if _name_problem(self.name):
            return f"name: {_name_problem(self.name)}"
        if self.kind not in KINDS:
            return f"kind: {quoted(self.kind)} is not one of {', '.join(KINDS)}"
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                continue
            if self.kind == "categorical":
                return f"{key}: a categorical feature has no range"
            if not _is_number(value):
                return f"{key}: {quoted(value)} is not a number"
            if not math.isfinite(value):
                return f"{key}: {quoted(value)} is not finite"
        if self.low is not None and self.high is not None and self.low > self.high:
            return f"low: {self.low} is above high: {self.high}"
        if self.kind == "binary":
            for key in ("low", "high"):
                value = getattr(self, key)
                if value is not None and value not in (0, 1):
                    return f"{key}: {quoted(value)}: a binary feature's range lies within 0..1"
        if self.kind != "categorical":
            if self.categories:
                return f"categories: only a categorical feature has categories (kind {self.kind})"
            if self.unknown != "error":
                return "unknown: only a categorical feature maps unknown values"
            return None
        if not isinstance(self.categories, tuple) or not self.categories:
            return "categories: a categorical feature needs a non-empty list of categories"
        for i, cat in enumerate(self.categories):
            if not isinstance(cat, str) or not cat.strip() or cat != cat.strip():
                return (
                    f"categories[{i}]: {quoted(cat)} is not a non-empty string without spaces "
                    "around it (quote numbers and yes/no in YAML)"
                )
        repeated = first_repeat(self.categories)
        if repeated is not None:
            return f"categories: {quoted(repeated[1])} appears more than once"
        if self.unknown not in UNKNOWN_POLICIES:
            return f"unknown: {quoted(self.unknown)} is not one of {', '.join(UNKNOWN_POLICIES)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only; the range and categories where they apply."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is not None:
                out[key] = int(value) if float(value).is_integer() else float(value)
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
            out["unknown"] = self.unknown
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Feature:
        """A feature from a mapping, checked key by key (errors name ``where`` and the key)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping with name and kind, got {quoted(d)}")
        _check_keys(d, _FEATURE_KEYS, ("name", "kind"), where)
        if not isinstance(d["kind"], str) or d["kind"] not in KINDS:
            raise ConfigError(f"{where}.kind: {quoted(d['kind'])} is not one of {', '.join(KINDS)}")
        values: dict[str, Any] = {"name": d["name"], "kind": d["kind"]}
        for key in ("low", "high"):
            value = d.get(key)
            if value is not None and not _is_number(value):
                raise ConfigError(f"{where}.{key}: {quoted(value)} is not a number")
            values[key] = None if value is None else float(value)
        categories = d.get("categories", [])
        if not isinstance(categories, list | tuple):
            raise ConfigError(f"{where}.categories: expected a list, got {quoted(categories)}")
        values["categories"] = tuple(categories)
        values["unknown"] = d.get("unknown", "error")
        probe = cls.__new__(cls)
        for key, value in values.items():
            object.__setattr__(probe, key, value)
        problem = probe.problem()
        if problem:
            raise ConfigError(f"{where}.{problem}")
        return cls(**values)


@dataclass(frozen=True)
class Schema:
    """The features (in model-input order), the label column and its classes.

    ``classes`` are the label's values, all ints or all strings; a label value is encoded as
    its position in ``classes``. ``ordered`` says the classes have an order (as listed), which
    ordinal heads and regression losses need. ``id`` names a column kept for predictions.
    """

    features: tuple[Feature, ...]
    label: str
    classes: tuple[int | str, ...]
    ordered: bool
    id: str | None = None
    _index: dict[Any, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ConfigError(f"schema: {problem}")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.classes)})

    # ---------------------------------------------------------------- views

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def integer_classes(self) -> bool:
        """True when the label's values are integers (else they are strings)."""
        return isinstance(self.classes[0], int)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    # ---------------------------------------------------------------- checks and (de)serialization

    def problem(self) -> str | None:
        """What is inconsistent, as ``<key>...: <why>``, or None."""
        if not isinstance(self.features, tuple) or not self.features:
            return "features: at least one feature is needed"
        for i, f in enumerate(self.features):
            if not isinstance(f, Feature):
                return f"features[{i}]: {quoted(f)} is not a Feature"
        names = self.feature_names
        repeated = first_repeat(names)
        if repeated is not None:
            return f"features[{repeated[0]}].name: {quoted(repeated[1])} appears more than once"
        if _name_problem(self.label):
            return f"label: {_name_problem(self.label)}"
        if self.label in names:
            return f"label: {quoted(self.label)} is also a feature"
        if self.id is not None:
            if _name_problem(self.id):
                return f"id: {_name_problem(self.id)}"
            if self.id in names or self.id == self.label:
                return f"id: {quoted(self.id)} is also a feature or the label"
        if not isinstance(self.classes, tuple) or len(self.classes) < 2:
            return f"classes: {quoted(list(self.classes))}: at least two classes are needed"
        kinds = {type(c) for c in self.classes}
        if kinds not in ({int}, {str}):
            classes = quoted(list(self.classes))
            return f"classes: {classes}: all integers or all strings (no booleans)"
        for i, c in enumerate(self.classes):
            if isinstance(c, str) and (not c.strip() or c != c.strip()):
                return (
                    f"classes[{i}]: {quoted(c)} is not a non-empty string without spaces around it"
                )
        repeated = first_repeat(self.classes)
        if repeated is not None:
            return f"classes: {quoted(repeated[1])} appears more than once"
        if not isinstance(self.ordered, bool):
            return f"ordered: {quoted(self.ordered)} is not true or false"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (stored in checkpoints, written as YAML)."""
        return {
            "label": self.label,
            "classes": list(self.classes),
            "ordered": self.ordered,
            "id": self.id,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Schema:
        """A schema from a mapping; every problem is a :class:`ConfigError` naming ``where``."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping with features, label, classes")
        _check_keys(d, _SCHEMA_KEYS, ("features", "label", "classes"), where)
        raw_features, raw_classes = d["features"], d["classes"]
        if not isinstance(raw_features, list | tuple) or not raw_features:
            raise ConfigError(f"{where}.features: expected a non-empty list of features")
        if not isinstance(raw_classes, list | tuple):
            raise ConfigError(f"{where}.classes: expected a list, got {quoted(raw_classes)}")
        features = tuple(
            Feature.from_dict(f, f"{where}.features[{i}]") for i, f in enumerate(raw_features)
        )
        ordered = d.get("ordered", False)
        probe = cls.__new__(cls)
        values = {
            "features": features,
            "label": d["label"],
            "classes": tuple(raw_classes),
            "ordered": ordered,
            "id": d.get("id"),
        }
        for key, value in values.items():
            object.__setattr__(probe, key, value)
        problem = probe.problem()
        if problem:
            raise ConfigError(f"{where}.{problem}")
        return cls(**values)

    def to_yaml(self) -> str:
        """The schema as YAML (one flow-style line per feature), readable by ``from_yaml``."""
        import yaml

        def dump(value: Any) -> str:
            return yaml.safe_dump(
                value, default_flow_style=True, sort_keys=False, width=10**9
            ).strip()

        d = self.to_dict()
        lines = [dump({key: d[key]})[1:-1] for key in ("label", "classes", "ordered", "id")]
        lines.append("features:")
        lines += [f"  - {dump(f)}" for f in d["features"]]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_yaml(cls, path: str | Path) -> Schema:
        """A schema from a YAML file (errors name the file)."""
        import yaml

        path = Path(path).expanduser()
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid YAML ({first_line(err)})") from None
        return cls.from_dict(d, str(path))

    # ---------------------------------------------------------------- labels

    def label_problem(self, value: Any) -> str:
        """Why ``value`` is not a class (the cell's own problem first: empty, missing, text)."""
        if is_missing(value) and not isinstance(value, str):
            return f"{quoted(value)} is a missing value"
        text = value if isinstance(value, str) else number_text(value)
        if isinstance(value, str) and (self.integer_classes or is_missing(value)):
            problem = describe_text(value)
            if problem:
                return problem
        if self.integer_classes and _contiguous(self.classes):
            low, high = self.classes[0], self.classes[-1]
            return f"label {shown(text)} is not an integer in {low}..{high}"
        listed = ", ".join(map(repr, self.classes[:20])) + (
            ", ..." if self.num_classes > 20 else ""
        )
        return f"label {shown(text)} is not one of the classes {listed}"

    def label_indices(self, values: Iterable[Any]) -> np.ndarray:
        """Class values -> int64 indices into ``classes``, -1 where a value is not a class.

        Integer classes accept numbers and numeric text (``'1.0'`` is class 1); string
        classes compare the text with spaces around it removed.
        """
        import pandas as pd

        series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
        if not self.integer_classes:
            texts = series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else None)
            return texts.map(lambda v: self._index.get(v, -1)).to_numpy(dtype=np.int64)
        numbers = to_float(series)
        index = np.full(len(series), -1, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(numbers) & (numbers == np.round(numbers)) & (np.abs(numbers) < 2**62)
        lookup = np.array(self.classes, dtype=np.int64)
        order = np.argsort(lookup)
        wanted = numbers[ok].astype(np.int64)
        pos = np.clip(np.searchsorted(lookup[order], wanted), 0, len(lookup) - 1)
        found = lookup[order][pos] == wanted
        index[np.flatnonzero(ok)[found]] = order[pos[found]]
        return index

    def encode_labels(
        self,
        values: Iterable[Any],
        source: str,
        *,
        line_of: Callable[[int], int | str] | None = None,
    ) -> np.ndarray:
        """Class values -> int64 indices into ``classes``.

        A value that is not a class raises :class:`DataError` naming ``source``, the label
        column, the row (``row <i>`` by position, or ``line <n>`` through ``line_of``) and the
        value.
        """
        values = list(values) if not hasattr(values, "iloc") else values
        index = self.label_indices(values)
        bad = np.flatnonzero(index < 0)
        if bad.size:
            i = int(bad[0])
            at = f"line {line_of(i)}" if line_of is not None else f"row {i}"
            value = values.iloc[i] if hasattr(values, "iloc") else values[i]
            prefix = f"{source}: " if source else ""
            problem = self.label_problem(value)
            raise DataError(f"{prefix}column {quoted(self.label)}, {at}: {problem}")
        return index

    def decode_labels(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Indices -> the original class values (int64 for integer classes, else objects)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_classes):
            raise ValueError(f"class index out of 0..{self.num_classes - 1}")
        if self.integer_classes:
            return np.array(self.classes, dtype=np.int64)[idx]
        return np.array(self.classes, dtype=object)[idx]


def _contiguous(classes: tuple[Any, ...]) -> bool:
    return list(classes) == list(range(classes[0], classes[0] + len(classes)))


def _binary(name: str) -> Feature:
    return Feature(name, "binary", 0.0, 1.0)


def _integer(name: str, low: float, high: float) -> Feature:
    return Feature(name, "integer", float(low), float(high))


MOBILE_PRICE = Schema(
    features=(
        _integer("battery_power", 501, 1998),
        _binary("blue"),
        Feature("clock_speed", "numeric", 0.5, 3.0),
        _binary("dual_sim"),
        _integer("fc", 0, 19),
        _binary("four_g"),
        _integer("int_memory", 2, 64),
        Feature("m_dep", "numeric", 0.1, 1.0),
        _integer("mobile_wt", 80, 200),
        _integer("n_cores", 1, 8),
        _integer("pc", 0, 20),
        _integer("px_height", 0, 1960),
        _integer("px_width", 500, 1998),
        _integer("ram", 256, 3998),
        _integer("sc_h", 5, 19),
        _integer("sc_w", 0, 18),
        _integer("talk_time", 2, 20),
        _binary("three_g"),
        _binary("touch_screen"),
        _binary("wifi"),
    ),
    label="price_range",
    classes=(0, 1, 2, 3),
    ordered=True,
    id="id",
)
"""The Kaggle phone-price schema: the default and showcase (conf/data/schema/mobile_price.yaml)."""
