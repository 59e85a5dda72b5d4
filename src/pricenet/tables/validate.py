"""One validator for every way a table comes in: a CSV file, a DataFrame, any future entry point.

``validate_frame`` checks each column against the schema with vectorized passes, then, only if
something is wrong, describes the first bad cell in reading order (row by row, columns in schema
order) as ``<source>: column '<name>', line <n>: <what>`` (files) or ``column '<name>', row
<index>: <what>`` (DataFrames). Nothing row-by-row runs on the fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from pricenet.errors import ConfigError, DataError
from pricenet.errors import shown as quoted
from pricenet.tables.cells import (
    LARGEST,
    describe_text,
    describe_value,
    is_missing,
    number_text,
    shown,
    to_float,
)
from pricenet.tables.schema import Feature, Schema, first_repeat
from pricenet.tables.table import Table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pricenet.tables")

Missing = Literal["error", "impute"]
Ranges = Literal["error", "warn", "ignore"]
MISSING_POLICIES: tuple[str, ...] = get_args(Missing)
RANGE_POLICIES: tuple[str, ...] = get_args(Ranges)


def check_policies(missing: str, ranges: str) -> None:
    """Refuse an unknown ``data.missing`` or ``data.ranges`` policy."""
    if missing not in MISSING_POLICIES:
        raise ConfigError(
            f"data.missing={quoted(missing)}: expected one of {', '.join(MISSING_POLICIES)}"
        )
    if ranges not in RANGE_POLICIES:
        raise ConfigError(
            f"data.ranges={quoted(ranges)}: expected one of {', '.join(RANGE_POLICIES)}"
        )


MAX_COLUMNS = 65_536
"""The most columns a table file may have: the most inputs a network takes
(``pricenet.nn.spec.MAX_WIDTH``). Files are checked from their header or footer, before any
row is read."""


def check_column_count(source: str, columns: int, where: str = "") -> None:
    """Refuse a table of more than :data:`MAX_COLUMNS` columns (``where``: e.g. ``line 1: ``)."""
    if columns > MAX_COLUMNS:
        raise DataError(
            f"{source}: {where}{columns:,} columns, over the limit of {MAX_COLUMNS:,} "
            "(a network takes at most that many inputs)"
        )


DEFAULT_ID = "id"
"""A column of this name is passed through as the rows' ids when the schema names none."""


def id_column(schema: Schema, columns: Iterable[str], id: str | None = None) -> str | None:
    """The column that holds the rows' ids: ``id`` when given, else the schema's, else a
    column named ``id`` (unless it is a feature or the label): ids are never dropped as an
    unknown column."""
    if id is not None:
        return id
    if schema.id is not None:
        return schema.id
    taken = {*schema.feature_names, schema.label}
    return DEFAULT_ID if DEFAULT_ID not in taken and DEFAULT_ID in set(columns) else None


def range_text(feature: Feature) -> str:
    """``[low, high]`` with ``-inf``/``inf`` for an open side."""
    low = "-inf" if feature.low is None else number_text(feature.low)
    high = "inf" if feature.high is None else number_text(feature.high)
    return f"[{low}, {high}]"


@dataclass
class _Column:
    """One checked column: its clean values and its first bad row (-1 when none).

    ``same`` is the input column itself when its values are already the clean ones (float64
    without infinities): the table then shares it (copy-on-write) instead of a copy.
    """

    values: np.ndarray
    first_bad: int
    same: pd.Series | None = None


def _is_float64(series: pd.Series) -> bool:
    return isinstance(series.dtype, np.dtype) and series.dtype == np.float64


def _numeric(series: pd.Series, feature: Feature, missing: str, ranges: str) -> _Column:
    shared = _is_float64(series)
    values = series.to_numpy(copy=False) if shared else to_float(series)
    finite = np.isfinite(values)
    bad = ~finite
    if missing == "impute" and bad.any():
        positions = np.flatnonzero(bad)
        cells = series.iloc[positions]
        allowed = np.fromiter((is_missing(v) for v in cells), dtype=bool, count=len(positions))
        bad[positions[allowed]] = False
    with np.errstate(invalid="ignore"):
        bad |= finite & (np.abs(values) > LARGEST)
        if feature.kind in ("integer", "binary"):
            bad |= finite & (values != np.round(values))
        if feature.kind == "binary":
            bad |= finite & (values != 0) & (values != 1)
        outside = np.zeros(len(values), dtype=bool)
        if feature.low is not None:
            outside |= finite & (values < feature.low)
        if feature.high is not None:
            outside |= finite & (values > feature.high)
    if ranges == "error":
        bad |= outside
    if not finite.all():
        infinite = np.isinf(values)  # the other non-finite values are NaN already
        if infinite.any():
            values = values.copy() if shared else values
            values[infinite] = np.nan
            shared = False
    first = int(np.argmax(bad)) if bad.any() else -1
    if ranges == "warn" and outside.any():
        _warn_range(series, feature, outside, first)
    return _Column(values, first, series if shared else None)


OVERFLOW_SIGMAS = 1e6
"""How far (in training standard deviations) from the training mean a value may lie before a
model's input counts as overflowing: far beyond any value seen in training (a sample of n rows
lies within sqrt(n) of its mean), and far enough inside float32's range that the network's
arithmetic stays finite."""


def limit_overflow(
    table: Table,
    low: np.ndarray,
    high: np.ndarray,
    ranges: str,
    row_name: Callable[[int], str],
) -> Table:
    """``table`` with each numeric feature's values inside ``[low, high]`` (per numeric-kind
    feature in schema order: where the model's standardized input stays within
    :data:`OVERFLOW_SIGMAS`).

    A value beyond is refused under ``ranges="error"`` (naming the column and
    ``row_name(position)``), and clamped to the limit with a warning otherwise (also under
    ``"ignore"``: the prediction is for another value than the one given): inputs of
    +-3e38 pass the cell checks (they are finite float32) but overflow once standardized and
    would give NaN probabilities. Missing values (NaN) are left alone.
    """
    names = [f.name for f in table.schema.features if f.numeric]
    if not names:
        return table
    values = table.frame[names].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        beyond = (values < low) | (values > high)
    if not beyond.any():
        return table
    prefix = f"{table.source}: " if not table.source.startswith("<") else ""
    row, col = np.argwhere(beyond)[0]  # reading order: row by row, columns in schema order
    where = f"column {names[col]!r}, {row_name(int(row))}"
    value = number_text(values[row, col])
    if ranges == "error":
        raise DataError(
            f"{prefix}{where}: {shown(value)} is more than {OVERFLOW_SIGMAS:g} training standard "
            "deviations from the mean: the model's input would overflow "
            "(ranges=warn predicts it clamped, with a warning)"
        )
    log.warning(
        "%s%d value(s) more than %g training standard deviations from the mean, clamped "
        "(the model's input would overflow); the first: %s, %s",
        prefix,
        int(beyond.sum()),
        OVERFLOW_SIGMAS,
        where,
        shown(value),
    )
    frame = table.frame.copy()
    frame[names] = np.clip(values, low, high)
    return replace(table, frame=frame)


def _warn_range(series: pd.Series, feature: Feature, outside: np.ndarray, first_bad: int) -> None:
    rows = np.flatnonzero(outside)
    if first_bad >= 0:
        rows = rows[rows < first_bad]  # an error will be raised first
    if rows.size:
        value = number_text(to_float(series.iloc[rows[:1]])[0])
        log.warning(
            "column %r: %d value(s) outside the range %s (data.ranges=warn), the first %s",
            feature.name,
            rows.size,
            range_text(feature),
            value,
        )


def _categorical(series: pd.Series, feature: Feature, missing: str) -> _Column:
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip()
        return None if is_missing(value) else number_text(value)

    texts = series.astype(object).map(clean)
    known = texts.isin(feature.categories).to_numpy(dtype=bool)
    absent = ~known & texts.map(is_missing).to_numpy(dtype=bool)
    bad = np.zeros(len(texts), dtype=bool)
    if missing == "error":
        bad |= absent
    if feature.unknown == "error":
        bad |= ~known & ~absent
    values = texts.to_numpy(
        dtype=object, copy=True
    )  # writable: pandas may hand out a read-only view
    values[absent] = None
    return _Column(values, int(np.argmax(bad)) if bad.any() else -1)


def _cell_problem(value: Any, text: str | None, feature: Feature, missing: str, ranges: str) -> str:
    """What is wrong with one cell (``text`` is the file's own text, when there is one)."""
    cell = text if text is not None else value
    if feature.kind == "categorical":
        if is_missing(cell) and (
            not isinstance(cell, str) or cell.strip() not in feature.categories
        ):
            return describe_value(cell) or "missing value"
        listed = ", ".join(map(repr, feature.categories[:20]))
        more = ", ..." if len(feature.categories) > 20 else ""
        word = cell.strip() if isinstance(cell, str) else number_text(cell)
        return (
            f"{shown(word)} is not one of the categories {listed}{more} "
            "(unknown: map in the schema accepts new values)"
        )
    problem = describe_text(cell) if isinstance(cell, str) else describe_value(cell)
    if problem:
        return problem
    number = float(cell)
    word = shown(cell if isinstance(cell, str) else number_text(cell))
    if feature.kind == "binary" and number not in (0, 1):
        return f"{word} is not 0 or 1"
    if feature.kind in ("integer", "binary") and number != round(number):
        return f"{word} is not an integer"
    if (feature.low is not None and number < feature.low) or (
        feature.high is not None and number > feature.high
    ):
        return (
            f"{word} is outside the range {range_text(feature)} "
            "(data.ranges=warn accepts it with a warning)"
        )
    return f"{word} is not valid"  # only if the file's text and the parsed frame disagree


def check_group_role(source: object, group: str, label: str, schema: Schema | None) -> None:
    """``data.group`` names neither the label nor a feature: a group column is neither (the
    one rule the CSV and Parquet readers share)."""
    if group == label or (schema is not None and group in schema.feature_names):
        raise DataError(
            f"{source}: column {group!r} (data.group) is the schema's label or one of its "
            "features; a group column cannot be either"
        )


def validate_frame(
    frame: pd.DataFrame,
    schema: Schema,
    *,
    source: str = "",
    line_of: Callable[[int], int | str] | None = None,
    require_label: bool = True,
    missing: str = "error",
    ranges: str = "error",
    cell_text: Callable[[int, str], str] | None = None,
    id: str | None = None,
) -> Table:
    """Check ``frame`` against ``schema`` and return the validated :class:`Table`.

    Columns may come in any order; the id column (``id``, else ``schema.id``, else a column
    named ``id``: :func:`id_column`) is kept, the label is used when present (required with
    ``require_label``), other columns are ignored with a warning. ``missing``: ``"error"``
    refuses empty/NA cells, ``"impute"`` keeps them as NaN/None for the preprocessor.
    ``ranges``: a value outside a feature's ``[low, high]`` is an ``"error"``, a ``"warn"``ing,
    or ``"ignore"``d. ``line_of(row)`` names rows by file line
    and ``cell_text(row, column)`` gives a cell's text as written (the CSV reader passes both,
    computed only when an error is reported); without them rows are named by the frame's index.
    The first problem in reading order raises :class:`DataError`, prefixed by ``source``.
    """
    import pandas as pd  # here, not at the top: the config check imports this module

    check_policies(missing, ranges)
    prefix = f"{source}: " if source else ""
    columns = [str(c) for c in frame.columns]
    id_name = id_column(schema, columns, id)
    repeated = first_repeat(columns)
    if repeated is not None:
        raise DataError(f"{prefix}column {quoted(repeated[1])}: appears more than once")
    frame = frame.set_axis(columns, axis=1)
    required = [*schema.feature_names, *([schema.label] if require_label else [])]
    absent = [name for name in required if name not in frame.columns]
    if absent:
        word = "column" if len(absent) == 1 else "columns"
        where = "header" if line_of is not None else "DataFrame"
        raise DataError(f"{prefix}{word} {', '.join(map(repr, absent))}: missing from the {where}")
    known = {*schema.feature_names, schema.label, id_name}
    extra = [c for c in columns if c not in known]
    if extra:
        listed = ", ".join(quoted(name) for name in extra[:10])
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        log.warning("%signoring unknown column(s) %s%s", prefix, listed, more)
    if len(frame) == 0:
        raise DataError(f"{prefix}no data rows")

    checked: dict[str, _Column] = {}
    for feature in schema.features:
        series = frame[feature.name]
        if feature.kind == "categorical":
            checked[feature.name] = _categorical(series, feature, missing)
        else:
            checked[feature.name] = _numeric(series, feature, missing, ranges)
    labels = None
    label_bad = -1
    if schema.label in frame.columns:
        labels = schema.label_indices(frame[schema.label])
        bad = np.flatnonzero(labels < 0)
        label_bad = int(bad[0]) if bad.size else -1

    firsts = [(c.first_bad, i) for i, c in enumerate(checked.values()) if c.first_bad >= 0]
    if label_bad >= 0:
        firsts.append((label_bad, len(checked)))
    if firsts:
        row, order = min(firsts)
        at = f"line {line_of(row)}" if line_of is not None else f"row {quoted(frame.index[row])}"
        if order == len(checked):
            name = schema.label
            text = cell_text(row, name) if cell_text is not None else None
            what = schema.label_problem(text if text is not None else frame[name].iloc[row])
        else:
            feature = schema.features[order]
            name = feature.name
            text = cell_text(row, name) if cell_text is not None else None
            what = _cell_problem(frame[name].iloc[row], text, feature, missing, ranges)
        raise DataError(f"{prefix}column {name!r}, {at}: {what}")

    features = pd.DataFrame(
        {
            name: (
                pd.Series(column.values, dtype=column.values.dtype, copy=False)
                if column.same is None
                else column.same.reset_index(drop=True)  # no copy: pandas copies on write
            )
            for name, column in checked.items()
        },
        copy=False,  # one block per column: stacking them would copy the whole table
    )
    ids = None
    if id_name is not None and id_name in frame.columns:
        series = frame[id_name]
        if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
            series = series.map(lambda v: v.strip() if isinstance(v, str) else v)
        ids = series.to_numpy(dtype=object)
    return Table(features, labels, ids, schema, source or "<DataFrame>")
