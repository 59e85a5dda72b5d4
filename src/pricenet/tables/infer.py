"""Infer a schema from a table: kinds from the values, classes from the label column.

The rules, so that a user can predict (and then edit) the result:

- a column whose non-missing cells are all numbers is ``binary`` (only 0 and 1), ``integer``
  (whole numbers) or ``numeric``; no range is inferred, since rows not yet seen may exceed
  the observed ones (add ``low``/``high`` by hand to have them checked);
- a text column with at most :data:`MAX_CATEGORIES` distinct values is ``categorical``, its
  categories sorted; a text column with more (names, free text) is left out with a warning;
- the id column is the one given, else the first named ``id`` (any case) or ``*_id`` whose
  values are all distinct; it is kept for predictions, never a feature;
- the classes are the label's distinct values, sorted: integers when every value is a whole
  number, else strings; ``ordered`` is true only for integer classes (edit it if string
  classes have an order, listing them in that order).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from pricenet.errors import DataError
from pricenet.tables.cells import is_missing, number_text, to_float
from pricenet.tables.schema import Feature, Schema

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pricenet.tables")

MAX_CATEGORIES = 50
MAX_CLASSES = 100


# Share of a column's cells that must be numbers for it to be inferred numeric (the others
# are then reported as bad cells by validation).
MOSTLY_NUMERIC = 0.9


def _looks_like_id(name: str) -> bool:
    lower = name.lower()
    return lower == "id" or lower.endswith("_id")


def _present(series: pd.Series) -> pd.Series:
    """The cells that are not missing (empty, NA, None, NaN)."""
    import pandas as pd

    mask = (
        series.map(is_missing).to_numpy(dtype=bool)
        if series.dtype == object or (pd.api.types.is_string_dtype(series.dtype))
        else series.isna().to_numpy(dtype=bool)
    )
    return series[~mask]


def infer_feature(name: str, series: pd.Series, max_categories: int = MAX_CATEGORIES):
    """The :class:`Feature` for one column, or None (all missing, or too many distinct texts)."""
    present = _present(series)
    if present.empty:
        log.warning("column %r: every cell is missing; left out of the schema", name)
        return None
    numbers = to_float(present)
    finite = np.isfinite(numbers)
    # A column of numbers with a few bad cells is a numeric column with typos, not a category:
    # inferring it as numeric lets validation name the first bad cell.
    if finite.all() or finite.mean() >= MOSTLY_NUMERIC:
        numbers = numbers[finite]
        if np.isin(numbers, (0.0, 1.0)).all():
            return Feature(name, "binary")
        if (numbers == np.round(numbers)).all():
            return Feature(name, "integer")
        return Feature(name, "numeric")
    texts = present.astype(object).map(
        lambda v: v.strip() if isinstance(v, str) else number_text(v)
    )
    distinct = sorted(set(texts))
    if len(distinct) > max_categories:
        log.warning(
            "column %r: text with %d distinct values (more than %d), not a category; left out",
            name,
            len(distinct),
            max_categories,
        )
        return None
    return Feature(name, "categorical", categories=tuple(distinct))


def infer_classes(series: pd.Series, label: str, source: str) -> tuple[tuple[int | str, ...], bool]:
    """The label's classes (sorted) and whether they are ordered (integer classes are)."""
    present = _present(series)
    numbers = to_float(present)
    prefix = f"{source}: " if source else ""
    if len(present) and np.isfinite(numbers).all():
        if not (numbers == np.round(numbers)).all():
            raise DataError(
                f"{prefix}column {label!r}: has non-integer numbers; pricenet classifies, so the "
                "label must hold classes (integers or text)"
            )
        classes: tuple[int | str, ...] = tuple(int(v) for v in np.unique(numbers))
        ordered = True
    else:
        classes = tuple(sorted(set(present.astype(object).map(lambda v: str(v).strip())) - {""}))
        ordered = False
    if len(classes) < 2:
        shown = f"the value {classes[0]!r}" if classes else "no value"
        raise DataError(
            f"{prefix}column {label!r}: every row has {shown}; a label needs at least two classes"
        )
    if len(classes) > MAX_CLASSES:
        raise DataError(
            f"{prefix}column {label!r}: {len(classes)} distinct values (more than {MAX_CLASSES}); "
            "is it a class label?"
        )
    return classes, ordered


def infer_frame_schema(
    frame: pd.DataFrame,
    label: str,
    id: str | None = None,
    *,
    source: str | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> Schema:
    """A :class:`Schema` for a DataFrame (rules in the module docstring); a file's is
    :func:`pricenet.tables.read.infer_schema`, which reads it first."""
    source = source or ""
    prefix = f"{source}: " if source else ""
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    shown = ", ".join(map(repr, columns[:30])) + (", ..." if len(columns) > 30 else "")
    if label not in columns:
        raise DataError(f"{prefix}column {label!r} (the label): no such column; there are {shown}")
    if id is not None and id not in columns:
        raise DataError(f"{prefix}column {id!r} (the id): no such column; there are {shown}")
    if id is None:
        for name in columns:
            if name != label and _looks_like_id(name) and frame[name].is_unique:
                id = name
                break
    classes, ordered = infer_classes(frame[label], label, source)
    features = []
    for name in columns:
        if name in (label, id) or name.startswith("\0"):
            continue
        feature = infer_feature(name, frame[name], max_categories)
        if feature is not None:
            features.append(feature)
    if not features:
        raise DataError(f"{prefix}no usable feature columns besides the label {label!r}")
    return Schema(tuple(features), label, classes, ordered, id)
