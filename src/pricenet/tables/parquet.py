"""Parquet tables: read one into the CSV path's :class:`Table`, write predictions as Parquet.

A Parquet file arrives typed, so the reader's job is to hand :func:`validate_frame` the frame
a CSV of the same table would give, and to refuse what has no such frame, in one line naming
the column:

- only the columns the schema names (features, label, id) are read (columns are stored apart:
  the others cost nothing), after the same file checks as a CSV (regular file, ``max_bytes``,
  at most ``MAX_COLUMNS`` columns, counted in the footer);
- numbers, booleans and text are handed over as they are (text that should be a number is
  parsed and checked as in a CSV); dictionary (categorical) columns are decoded, decimals become
  float64, nulls are missing cells (``empty cell`` under ``missing=error``, as in a CSV);
- text classes are read as text (an integer column there becomes its text), a date or time
  as id, categorical feature or class becomes its text (ISO 8601); the id keeps its type
  otherwise (integer ids stay integers in predictions); a date or time where a number is
  expected is refused, as are bytes and nested columns (lists, structs, maps), which have no
  single value per cell;
- rows are named ``row <n>``, counting data rows from 1.

With no schema, every flat column is read and the schema is inferred as for a CSV; columns of
types no feature can have are left out with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pricenet.atomic import atomic_write
from pricenet.errors import ConfigError, DataError, first_line
from pricenet.tables.files import DEFAULT_MAX_BYTES, check_file
from pricenet.tables.infer import MAX_CATEGORIES
from pricenet.tables.schema import Schema
from pricenet.tables.table import Table
from pricenet.tables.validate import (
    check_column_count,
    check_group_role,
    check_policies,
    validate_frame,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("pricenet.tables")

Role = Literal["number", "text", "as text"]
"""What a column must give: numbers (numeric features, integer classes), text (the id and
categorical features: numbers are taken as they are, dates become text) or, for text classes,
text whatever its type."""


def _type_problem(arrow_type: pa.DataType, role: Role) -> str | None:
    """Why a column of ``arrow_type`` cannot give ``role`` values, or None."""
    if pa.types.is_dictionary(arrow_type):
        return _type_problem(arrow_type.value_type, role)
    if pa.types.is_nested(arrow_type):
        return f"is a nested column ({arrow_type}); pricenet reads one number or text per cell"
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    ):
        return f"holds bytes ({arrow_type}); pricenet reads numbers and text"
    if role == "number" and pa.types.is_temporal(arrow_type):
        return (
            f"is a {arrow_type} column, not numbers; store it as a number "
            "(e.g. seconds since 1970) or name it a categorical feature in the schema"
        )
    if not (
        _is_text(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_null(arrow_type)
        or pa.types.is_temporal(arrow_type)
    ):
        return f"is a {arrow_type} column; pricenet reads numbers and text"
    return None


def _is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def _as_validated(column: pa.ChunkedArray, role: Role) -> pa.ChunkedArray:
    """``column`` as the CSV reader would give it for ``role``: dictionaries decoded, decimals
    as float64, dates as text where text is wanted."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if _is_text(column.type):
        return column
    if role == "as text" or (role == "text" and pa.types.is_temporal(column.type)):
        return column.cast(pa.string())
    if pa.types.is_decimal(column.type):
        return column.cast(pa.float64(), safe=False)
    return column


def _open(path: Path) -> pq.ParquetFile:
    """The file's footer (schema and row groups), its column count checked before any use."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"{path}: not a Parquet file, or a corrupt one ({first_line(err)})"
        ) from None
    check_column_count(str(path), parquet.metadata.num_columns, "its footer lists ")
    return parquet


def _columns(path: Path, arrow_schema: pa.Schema) -> dict[str, pa.DataType]:
    """The file's top-level columns and their types; a name twice is refused."""
    columns: dict[str, pa.DataType] = {}
    for field in arrow_schema:
        if field.name in columns:
            raise DataError(f"{path}: column {field.name!r}: appears more than once")
        columns[field.name] = field.type
    return columns


def _as_float(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An integer column as float64 when every value converts exactly (|v| <= 2**53), else
    as it is: the validator then takes the float64 values without a copy of its own, and a
    value's wording in a message (``number_text``) is the same either way."""
    if not pa.types.is_integer(column.type):
        return column
    try:
        return column.cast(pa.float64())  # a safe cast refuses an inexact value
    except pa.ArrowInvalid:
        return column


def _read_frame(
    path: Path,
    parquet: pq.ParquetFile,
    roles: dict[str, Role],
    max_bytes: int = DEFAULT_MAX_BYTES,
    floats: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """The columns in ``roles`` (name -> role) as a frame indexed by row, counted from 1.

    A compressed file may hold far more than its size suggests, so the table's size in memory
    (8 bytes a cell) must fit in ``max_bytes`` too, checked from the footer before reading.
    Integer columns named in ``floats`` (numeric features) become float64 one at a time in
    Arrow (:func:`_as_float`); one pandas block per column (``split_blocks``) and Arrow's
    buffers handed over or released as they are converted (``self_destruct``): no copy of
    the whole table is made on the way, here or in the validator.
    """
    rows = parquet.metadata.num_rows
    if rows * len(roles) * 8 > max_bytes:
        raise DataError(
            f"{path}: {rows:,} rows x {len(roles)} columns need {rows * len(roles) * 8:,} bytes "
            f"in memory, over the limit of {max_bytes:,} (raise it with data.max_bytes)"
        )
    try:
        arrow = parquet.read(columns=list(roles), use_threads=True)
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"{path}: cannot be read, a corrupt Parquet file? ({first_line(err)})"
        ) from None
    if arrow.num_rows == 0:
        raise DataError(f"{path}: has columns but no data rows")
    for i, name in enumerate(arrow.column_names):
        column = arrow.column(i)
        converted = _as_validated(column, roles[name])
        if name in floats:
            converted = _as_float(converted)
        if converted is not column:
            arrow = arrow.set_column(i, name, converted)
        del column, converted  # the replaced column is freed now, not at the next one
    frame = arrow.to_pandas(split_blocks=True, self_destruct=True, ignore_metadata=True)
    del arrow
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def _cell_text(path: Path) -> Callable[[int, str], str | None]:
    """``(row, column) -> the cell's text`` for error messages: read again, one column.

    A null is an empty cell (what a CSV export writes for it); a number or boolean is left
    to the frame's value (None), whose wording the validator has.
    """

    def text(row: int, name: str) -> str | None:
        cell = pq.ParquetFile(path).read(columns=[name]).column(0)[row].as_py()
        if cell is None:
            return ""
        return cell if isinstance(cell, str) else None

    return text


def _roles(schema: Schema, id_name: str | None) -> dict[str, Role]:
    """Each column the schema reads, and what it must give."""
    roles: dict[str, Role] = {
        f.name: "text" if f.kind == "categorical" else "number" for f in schema.features
    }
    roles[schema.label] = "number" if schema.integer_classes else "as text"
    if id_name is not None:
        roles[id_name] = "text"
    return roles


def _check_types(path: Path, columns: dict[str, pa.DataType], roles: dict[str, Role]) -> None:
    for name, role in roles.items():
        problem = _type_problem(columns[name], role)
        if problem:
            raise DataError(f"{path}: column {name!r}: {problem}")


def _absent(path: Path, names: Iterable[str], columns: dict[str, pa.DataType]) -> None:
    absent = [name for name in names if name not in columns]
    if absent:
        word = "column" if len(absent) == 1 else "columns"
        raise DataError(
            f"{path}: {word} {', '.join(map(repr, absent))}: missing from the Parquet file"
        )


def _inference_roles(
    path: Path, columns: dict[str, pa.DataType], label: str, id_name: str | None
) -> dict[str, Role]:
    """Every column a schema could use, for inference; the others are left out with a warning."""
    roles: dict[str, Role] = {}
    left_out = []
    for name, arrow_type in columns.items():
        if name in (id_name, label):
            roles[name] = "text"
        elif name and _type_problem(arrow_type, "number") is None:
            roles[name] = "number"
        else:
            left_out.append(f"{name!r} ({arrow_type})")
    if left_out:
        log.warning(
            "%s: column(s) %s: neither numbers nor text; left out of the schema",
            path,
            ", ".join(left_out),
        )
    _check_types(path, columns, {k: v for k, v in roles.items() if k in (label, id_name)})
    return roles


def read_parquet_raw_frame(
    path: Path, *, label: str | None = None, id: str | None = None
) -> pd.DataFrame:
    """Every column a schema could use, as typed in the file (to infer a schema from)."""
    check_file(path, kind="Parquet")
    parquet = _open(path)
    columns = _columns(path, parquet.schema_arrow)
    _absent(path, [name for name in (label, id) if name is not None], columns)
    return _read_frame(path, parquet, _inference_roles(path, columns, label, id))


def read_parquet(
    path: str | Path,
    schema: Schema | None = None,
    *,
    label: str | None = None,
    id: str | None = None,
    require_label: bool = True,
    missing: str = "error",
    ranges: str = "error",
    max_bytes: int = DEFAULT_MAX_BYTES,
    group: str | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> Table:
    """Read and validate a Parquet file against ``schema`` (inferred from the file when None).

    The arguments and the result are :func:`~pricenet.tables.read.read_csv`'s; problems raise
    :class:`DataError` as ``<file>: column '<name>', row <n>: <what is wrong>``.
    """
    path = Path(path).expanduser()
    check_policies(missing, ranges)
    check_file(path, max_bytes, kind="Parquet")
    if schema is not None and label is not None and label != schema.label:
        raise ConfigError(f"data.label={label!r}: the schema's label is {schema.label!r}")
    label_name = schema.label if schema is not None else label
    if label_name is None:
        raise ConfigError("data.label: name the label column (needed to infer a schema)")
    id_name = id if id is not None else (schema.id if schema is not None else None)

    parquet = _open(path)
    columns = _columns(path, parquet.schema_arrow)
    required = list(schema.feature_names) if schema is not None else []
    if require_label or schema is None:
        required.append(label_name)
    if id is not None:
        required.append(id)
    if group is not None:
        required.append(group)
    _absent(path, required, columns)
    groups = None
    if group is not None:
        groups = _group_values(path, parquet, group, label_name, schema)
        del columns[group]  # not a feature: never inferred, never read as one

    if schema is None:
        roles = _inference_roles(path, columns, label_name, id_name)
        frame = _read_frame(path, parquet, roles, max_bytes)
        from pricenet.tables.infer import infer_frame_schema

        schema = infer_frame_schema(
            frame, label_name, id_name, source=str(path), max_categories=max_categories
        )
        id_name = schema.id
        known = {*schema.feature_names, schema.label, id_name}
        frame = frame[[name for name in frame.columns if name in known]]
    else:
        roles = {k: v for k, v in _roles(schema, id_name).items() if k in columns}
        _check_types(path, columns, roles)
        floats = frozenset(f.name for f in schema.features if f.numeric) - {id_name}
        frame = _read_frame(path, parquet, roles, max_bytes, floats)
    extra = [name for name in columns if name not in frame.columns]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(map(repr, extra)))
    table = validate_frame(
        frame,
        schema,
        source=str(path),
        cell_text=_cell_text(path),
        require_label=require_label,
        missing=missing,
        ranges=ranges,
        id=id_name,
    )
    return table if groups is None else replace(table, groups=groups)


def _group_values(
    path: Path, parquet: pq.ParquetFile, group: str, label: str, schema: Schema | None
) -> np.ndarray:
    """The ``data.group`` column as stripped text (CSV's :func:`take_group` rules)."""
    check_group_role(path, group, label, schema)
    column = parquet.read(columns=[group]).column(0)
    values = column.to_pandas().astype(str).str.strip().to_numpy(dtype=object)
    empty = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False) | (values == ""))
    if empty.size:
        raise DataError(
            f"{path}: column {group!r} (data.group), row {int(empty[0]) + 1}: empty; "
            "every row needs a group"
        )
    return values


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` (its columns, not its index) as a Parquet file, atomically."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return atomic_write(Path(path), lambda handle: pq.write_table(table, handle))
