"""Read a CSV into a validated :class:`Table`: pandas' C parser on the fast path.

Before any byte is parsed the path must be a regular file (not a device, FIFO or directory)
no larger than ``max_bytes``. The header is read with the csv module (to check names and find
the separator; over ``MAX_COLUMNS`` names, the file is refused before its body is read), the
body with pandas, and the frame goes through :func:`validate_frame`, the
validator the DataFrame API uses too. Only when something is wrong is the file scanned again
record by record, to name the exact line (blank lines and quoted newlines counted).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import logging
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pricenet.errors import ConfigError, DataError
from pricenet.tables.files import DEFAULT_MAX_BYTES, check_file
from pricenet.tables.infer import MAX_CATEGORIES, infer_frame_schema
from pricenet.tables.schema import Schema
from pricenet.tables.table import Table
from pricenet.tables.validate import (
    MAX_COLUMNS,
    check_column_count,
    check_group_role,
    check_policies,
    id_column,
    validate_frame,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pricenet.tables")

PARQUET_SUFFIXES = (".parquet", ".pq")
"""File names ending so are read (and predictions written) as Parquet; any other as CSV."""
SEPARATORS = (";", "\t", "|")
"""Separators recognized besides the comma: a header with one of them and no comma uses it."""
_CHUNK = 1 << 23
MAX_HEADER_CHARS = 256 * MAX_COLUMNS
"""The most characters the header may take (its lines, blank lines before it included)."""


def encoding_problem(path: Path) -> str | None:
    """``line <n>: not UTF-8 text (byte 0x..)`` for the first invalid byte, else None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # err.object is this chunk after the (newline-free) bytes the decoder held.
                bad = err.object[err.start]
                line = lines + err.object[: err.start].count(b"\n") + 1
                return f"line {line}: not UTF-8 text (byte 0x{bad:02x}); save the file as UTF-8"
            if not chunk:
                return None
            lines += chunk.count(b"\n")


def _is_blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _open_text(path: Path):
    return open(path, encoding="utf-8-sig", newline="")


def read_header(path: Path) -> tuple[int, list[str], str]:
    """The header: its line, its names (spaces around them removed) and the separator.

    Only the header is read, at most :data:`MAX_HEADER_CHARS` characters of it, and a header
    of more than :data:`~pricenet.tables.validate.MAX_COLUMNS` names is refused: an over-wide
    file costs nothing before it is refused.
    """
    try:
        with _open_text(path) as f:
            lines = _header_lines(path, f)
            line = 0
            first = ""
            for text in lines:
                line += 1
                if text.strip():
                    first = text
                    break
            if not first:
                raise DataError(f"{path}: file is empty")
            sep = ","
            if "," not in first:
                found = [s for s in SEPARATORS if s in first]
                if found:
                    sep = found[0]
            reader = csv.reader(
                itertools.chain([first], lines), delimiter=sep, skipinitialspace=True, strict=True
            )
            try:
                fields = next(reader)
            except csv.Error as err:
                raise DataError(f"{path}: line {line}: malformed CSV ({err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: {encoding_problem(path) or 'not UTF-8 text'}") from None
    check_column_count(str(path), len(fields), f"line {line}: the header has ")
    if sep != ",":
        log.info("%s: is separated by %r, not commas; reading it with %r", path, sep, sep)
    return line, [name.strip() for name in fields], sep


def _header_lines(path: Path, f) -> Iterator[str]:
    """``f``'s lines, refused once they add up to over :data:`MAX_HEADER_CHARS` characters
    (a line is never read whole past that)."""
    total = 0
    while text := f.readline(MAX_HEADER_CHARS + 1 - total):
        total += len(text)
        if total > MAX_HEADER_CHARS:
            raise DataError(
                f"{path}: the header is over {MAX_HEADER_CHARS:,} characters "
                f"(at most {MAX_COLUMNS:,} columns are read)"
            )
        yield text


class RawRecords:
    """The file's data records as the csv module sees them, found again only on errors.

    Row ``i`` is the i-th non-blank record after the header, as in pandas' frame; each
    lookup scans from the start, which costs nothing until a problem is reported.
    """

    def __init__(self, path: Path, sep: str, header: list[str]) -> None:
        self.path = path
        self.sep = sep
        self.header = header
        self.position = {name: i for i, name in enumerate(header)}

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the record starts, fields) for each data record."""
        with _open_text(self.path) as f:
            reader = csv.reader(f, delimiter=self.sep, skipinitialspace=True, strict=True)
            start, seen_header = 1, False
            try:
                for fields in reader:
                    if not _is_blank(fields):
                        if seen_header:
                            yield start, fields
                        seen_header = True
                    start = reader.line_num + 1
            except csv.Error as err:
                raise DataError(f"{self.path}: line {start}: malformed CSV ({err})") from None
            except UnicodeDecodeError:
                problem = encoding_problem(self.path) or "not UTF-8 text"
                raise DataError(f"{self.path}: {problem}") from None

    def record(self, row: int) -> tuple[int, list[str]]:
        for i, found in enumerate(self.records()):
            if i == row:
                return found
        raise DataError(f"{self.path}: row {row + 1} not found again (was the file changed?)")

    def check(self, line: int, fields: list[str]) -> None:
        if len(fields) != len(self.header):
            raise DataError(
                f"{self.path}: line {line}: {len(fields)} fields, "
                f"but the header has {len(self.header)}"
            )

    def line_of(self, row: int) -> int:
        return self.record(row)[0]

    def cell_text(self, row: int, name: str) -> str:
        line, fields = self.record(row)
        self.check(line, fields)
        return fields[self.position[name]]

    def check_rows(self, rows: np.ndarray) -> None:
        """Refuse the first of ``rows`` (sorted positions) whose field count is wrong."""
        wanted = iter(rows.tolist())
        target = next(wanted, None)
        for i, (line, fields) in enumerate(self.records()):
            if target is None:
                return
            if i == target:
                self.check(line, fields)
                target = next(wanted, None)

    def first_problem(self) -> None:
        """Raise for the first malformed record or wrong field count, if there is one."""
        for line, fields in self.records():
            self.check(line, fields)


def _parse(
    path: Path, sep: str, names: list[str], dtypes: dict[str, type], raw: RawRecords
) -> pd.DataFrame:
    """The body parsed by pandas' C engine, every cell as written (no NA guessing)."""
    import pandas as pd  # here: the config check imports this module (data.source)

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        try:
            return pd.read_csv(
                path,
                sep=sep,
                header=0,
                names=names,
                index_col=False,
                dtype=dtypes or None,
                encoding="utf-8",
                skipinitialspace=True,
                na_filter=False,
                engine="c",
            )
        except UnicodeDecodeError:
            raise DataError(f"{path}: {encoding_problem(path) or 'not UTF-8 text'}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: has a header but no data rows") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError, OverflowError) as err:
            raw.first_problem()
            first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            raise DataError(f"{path}: malformed CSV ({first})") from None


def read_raw_frame(path: Path, *, label: str | None = None, id: str | None = None) -> pd.DataFrame:
    """Every column of a CSV (or Parquet file) as parsed, after the file and header checks.

    Used to infer a schema; columns without a name are left out.
    """
    if is_parquet(path):
        from pricenet.tables.parquet import read_parquet_raw_frame

        return read_parquet_raw_frame(path, label=label, id=id)
    check_file(path)
    header_line, header, sep = read_header(path)
    _check_duplicates(path, header, header_line)
    names = [name or f"\0unnamed column {i + 1}" for i, name in enumerate(header)]
    raw = RawRecords(path, sep, names)
    frame = _parse(path, sep, names, {id: str} if id in header else {}, raw)
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return frame[[n for n in names if not n.startswith("\0")]]


def _check_duplicates(path: Path, header: list[str], line: int) -> None:
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise DataError(f"{path}: column {name!r}, line {line}: appears more than once")
        seen.add(name)


def is_parquet(path: str | Path) -> bool:
    """True when ``path``'s suffix names a Parquet file (see :data:`PARQUET_SUFFIXES`)."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def read_table(path: str | Path, schema: Schema | None = None, **options) -> Table:
    """:func:`read_csv`, or for a ``.parquet`` file :func:`~pricenet.tables.parquet.read_parquet`
    (same arguments, same checks and messages)."""
    if is_parquet(path):
        from pricenet.tables.parquet import read_parquet

        return read_parquet(path, schema, **options)
    return read_csv(path, schema, **options)


def read_csv(
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
    """Read and validate a CSV against ``schema`` (inferred from the file when None).

    UTF-8 (a BOM is fine), CRLF or LF, blank lines, quoted fields and columns in any order are
    accepted; a header without commas but with ``;``, tab or ``|`` is read with that separator.
    The id column (``id``, else the schema's) is kept; unknown columns are ignored with a
    warning. ``label`` names the label column (needed to infer a schema; with a schema it must
    agree). ``missing``/``ranges`` are the policies of :func:`validate_frame`. Every problem
    raises :class:`DataError` as ``<file>: column '<name>', line <n>: <what is wrong>``.
    ``group`` names a column carried out as the table's ``groups`` (see :func:`take_group`).
    """
    from pandas.api.types import is_numeric_dtype

    path = Path(path).expanduser()
    check_policies(missing, ranges)
    check_file(path, max_bytes)
    header_line, header, sep = read_header(path)
    _check_duplicates(path, header, header_line)
    seen = set(header)
    if schema is not None and label is not None and label != schema.label:
        raise ConfigError(f"data.label={label!r}: the schema's label is {schema.label!r}")
    label_name = schema.label if schema is not None else label
    if label_name is None:
        raise ConfigError("data.label: name the label column (needed to infer a schema)")
    id_name = id_column(schema, seen, id) if schema is not None else id
    required = list(schema.feature_names) if schema is not None else []
    if require_label or schema is None:
        required.append(label_name)
    if id is not None:
        required.append(id)
    if group is not None:
        required.append(group)
    absent = [name for name in required if name not in seen]
    if absent:
        word = "column" if len(absent) == 1 else "columns"
        hint = ""
        if len(header) == 1 and schema is not None:
            hint = "; is it separated by something other than , ; tab or |?"
        raise DataError(
            f"{path}: {word} {', '.join(map(repr, absent))}, line {header_line}: "
            f"missing from the header{hint}"
        )

    names = [name or f"\0unnamed column {i + 1}" for i, name in enumerate(header)]
    dtypes: dict[str, type] = {}
    if id_name in seen:
        dtypes[id_name] = str
    if group is not None:
        dtypes[group] = str
    if schema is not None:
        dtypes.update({f.name: str for f in schema.features if f.kind == "categorical"})
        if not schema.integer_classes and label_name in seen:
            dtypes[label_name] = str
    raw = RawRecords(path, sep, names)
    frame = _parse(path, sep, names, dtypes, raw)
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    last = frame.iloc[:, -1]
    if not is_numeric_dtype(last.dtype):
        short = np.flatnonzero((last.astype(object) == "").to_numpy(dtype=bool))
        if short.size:  # a short row leaves its last cells empty: count its fields
            raw.check_rows(short if missing == "impute" else short[:1])
    groups = take_group(frame, group, label_name, schema, path, raw) if group is not None else None

    if schema is None:
        schema = infer_frame_schema(
            frame, label_name, id_name, source=str(path), max_categories=max_categories
        )
        id_name = schema.id
    known = {*schema.feature_names, schema.label, id_name, group}
    extra = [repr(n) if not n.startswith("\0") else n[1:] for n in names if n not in known]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(extra))
    frame = frame[[n for n in names if n in known and n != group]]
    table = validate_frame(
        frame,
        schema,
        source=str(path),
        line_of=raw.line_of,
        cell_text=raw.cell_text,
        require_label=require_label,
        missing=missing,
        ranges=ranges,
        id=id_name,
    )
    return table if groups is None else replace(table, groups=groups)


def take_group(
    frame: pd.DataFrame,
    group: str,
    label: str,
    schema: Schema | None,
    path: Path,
    raw: RawRecords,
) -> np.ndarray:
    """The ``data.group`` column's values (stripped text), taken out of the frame in place.

    The group column is not a feature: it is removed before a schema is inferred, a schema
    that lists it is refused, and every row needs a group.
    """
    check_group_role(path, group, label, schema)
    values = frame.pop(group).astype(str).str.strip().to_numpy(dtype=object)
    empty = np.flatnonzero(values == "")
    if empty.size:
        raise DataError(
            f"{path}: column {group!r} (data.group), line {raw.line_of(int(empty[0]))}: "
            "empty; every row needs a group"
        )
    return values


def infer_schema(
    frame_or_path: pd.DataFrame | str | Path,
    label: str,
    id: str | None = None,
    *,
    source: str | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> Schema:
    """A :class:`Schema` for a DataFrame or a CSV / Parquet file (the file read as parsed;
    rules in :mod:`pricenet.tables.infer`)."""
    import pandas as pd

    if not isinstance(frame_or_path, pd.DataFrame):
        path = Path(frame_or_path).expanduser()
        frame = read_raw_frame(path, label=label, id=id)
        source = str(path) if source is None else source
        return infer_frame_schema(frame, label, id, source=source, max_categories=max_categories)
    return infer_frame_schema(
        frame_or_path, label, id, source=source, max_categories=max_categories
    )
