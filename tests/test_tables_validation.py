"""The new CSV reader and the DataFrame validator: one DataError line naming file, column, line.

Ported from tests/test_data_validation.py (the hand-written loader's cases): the same bad
inputs give the same messages through pandas, plus the DataFrame path refusing what the CSV
path refuses, and the fuzz tests (only DataError, never another exception).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricenet.errors import DataError, exit_on_user_error
from pricenet.tables import MOBILE_PRICE, Table, make_synthetic, read_csv, validate_frame
from pricenet.tables.splits import stratified_split
from pricenet.tables.validate import id_column

LABEL = MOBILE_PRICE.label
FEATURES = MOBILE_PRICE.feature_names
GOOD = make_synthetic(40, seed=1).to_frame().to_csv(index=False)
HEADER = GOOD.splitlines()[0].split(",")


def grid() -> list[list[str]]:
    """The good CSV as a list of rows of cells (the header is row 0, i.e. line 1)."""
    return [line.split(",") for line in GOOD.splitlines()]


def text_of(rows: list[list[str]]) -> str:
    return "\n".join(",".join(row) for row in rows) + "\n"


def with_cell(line: int, column: str, value: str) -> str:
    """The good CSV with the cell at file line ``line`` of ``column`` replaced by ``value``."""
    rows = grid()
    rows[line - 1][HEADER.index(column)] = value
    return text_of(rows)


def without_column(column: str) -> str:
    index = HEADER.index(column)
    return text_of([row[:index] + row[index + 1 :] for row in grid()])


def with_line(line: int, text: str) -> str:
    lines = GOOD.splitlines()
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


def one_class() -> str:
    return text_of([grid()[0]] + [row[:-1] + ["2"] for row in grid()[1:]])


def load(path: Path) -> Table:
    """What a training run does with a CSV: read, validate, and split it stratified."""
    table = read_csv(path, MOBILE_PRICE)
    stratified_split(table.labels, 0.15, 0.15, seed=0, source=table.source, label=LABEL)
    return table


# (case id, file content: str = UTF-8 text, bytes = raw, None = no file, "<dir>" = a folder,
#  the message after "<file>: ")
BAD: list[tuple[str, str | bytes | None, str]] = [
    ("missing-file", None, "file not found"),
    ("directory", "<dir>", "is a directory, expected a CSV file"),
    ("empty-file", "", "file is empty"),
    ("blank-file", "\n  \n\n", "file is empty"),
    ("header-only", GOOD.splitlines()[0] + "\n", "has a header but no data rows"),
    ("missing-column", without_column("ram"), "column 'ram', line 1: missing from the header"),
    (
        "missing-label",
        without_column(LABEL),
        "column 'price_range', line 1: missing from the header",
    ),
    (
        "duplicated-column",
        text_of([row + [row[HEADER.index("ram")]] for row in grid()]),
        "column 'ram', line 1: appears more than once",
    ),
    ("non-numeric", with_cell(4, "ram", "abc"), "column 'ram', line 4: 'abc' is not a number"),
    ("empty-cell", with_cell(4, "ram", ""), "column 'ram', line 4: empty cell"),
    ("blank-cell", with_cell(9, "fc", "  "), "column 'fc', line 9: empty cell"),
    ("nan-cell", with_cell(4, "m_dep", "NaN"), "column 'm_dep', line 4: 'NaN' is a missing value"),
    ("na-cell", with_cell(5, "ram", "NA"), "column 'ram', line 5: 'NA' is a missing value"),
    (
        "inf",
        with_cell(4, "clock_speed", "inf"),
        "column 'clock_speed', line 4: 'inf' is not finite",
    ),
    ("minus-infinity", with_cell(7, "ram", "-Infinity"), "column 'ram', line 7: '-Infinity'"),
    ("overflow", with_cell(4, "ram", "1e999"), "column 'ram', line 4: '1e999' is not finite"),
    (
        "beyond-float32",
        with_cell(4, "m_dep", "3.5e38"),
        "column 'm_dep', line 4: '3.5e38' is too large (beyond float32's range)",
    ),
    ("label-4", with_cell(4, LABEL, "4"), "column 'price_range', line 4: label '4' is not"),
    ("label-negative", with_cell(6, LABEL, "-1"), "column 'price_range', line 6: label '-1'"),
    (
        "label-not-integer",
        with_cell(4, LABEL, "1.5"),
        "column 'price_range', line 4: label '1.5' is not an integer in 0..3",
    ),
    ("label-text", with_cell(3, LABEL, "two"), "column 'price_range', line 3: 'two' is not a"),
    (
        "feature-not-integer",
        with_cell(4, "battery_power", "842.5"),
        "column 'battery_power', line 4: '842.5' is not an integer",
    ),
    ("binary-not-0-1", with_cell(4, "blue", "2"), "column 'blue', line 4: '2' is not 0 or 1"),
    (
        "out-of-range",
        with_cell(5, "ram", "1000000000"),
        "column 'ram', line 5: '1000000000' is outside the range [256, 3998]",
    ),
    (
        "single-class",
        one_class(),
        "column 'price_range': every row has class 2; at least two classes are needed to train",
    ),
    (
        "too-few-rows",
        text_of(grid()[:6]),
        "column 'price_range': too few rows to split stratified",
    ),
    (
        "latin-1",
        with_cell(4, "ram", "café").encode("latin-1"),
        "line 4: not UTF-8 text (byte 0xe9)",
    ),
    ("utf-16", GOOD.encode("utf-16"), "line 1: not UTF-8 text (byte 0xff)"),
    ("binary-file", bytes(range(256)) * 8, "line 2: not UTF-8 text (byte 0x80)"),
    ("too-many-fields", with_line(6, GOOD.splitlines()[5] + ",7,8"), "line 6: 23 fields, but"),
    (
        "too-many-fields-first-row",
        with_line(2, GOOD.splitlines()[1] + ",7"),
        "line 2: 22 fields, but the header has 21",
    ),
    ("too-few-fields", with_line(6, "1,2,3"), "line 6: 3 fields, but the header has 21"),
    ("unclosed-quote", with_line(6, '"' + GOOD.splitlines()[5]), "line 6: malformed CSV"),
    ("only-commas", with_line(8, "," * 20), "column 'battery_power', line 8: empty cell"),
]


def write(tmp_path: Path, content: str | bytes | None) -> Path:
    path = tmp_path / "train.csv"
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_bytes(content.encode("utf-8"))
    return path


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: {message}")

    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(load)(path)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {caught.value}\n"
    assert "\n" not in str(caught.value)


def parsed(content: str | bytes, tmp_path: Path) -> Table:
    return load(write(tmp_path, content))


ACCEPTED: list[tuple[str, Callable[[], str | bytes]]] = [
    ("utf-8-bom", lambda: ("\ufeff" + GOOD).encode("utf-8")),
    ("crlf", lambda: GOOD.replace("\n", "\r\n")),
    ("bom-and-crlf", lambda: ("\ufeff" + GOOD.replace("\n", "\r\n")).encode("utf-8")),
    ("blank-lines", lambda: GOOD.replace("\n", "\n\n", 3)),
    ("blank-lines-before-header", lambda: "\n  \n" + GOOD),
    ("no-final-newline", lambda: GOOD.rstrip("\n")),
    ("spaces-around-cells", lambda: GOOD.replace(",", " , ")),
    ("quoted-cells", lambda: text_of([[f'"{c}"' for c in row] for row in grid()])),
    (
        "label-written-1.0",
        lambda: text_of([grid()[0]] + [r[:-1] + [r[-1] + ".0"] for r in grid()[1:]]),
    ),
    ("columns-reordered", lambda: text_of([row[::-1] for row in grid()])),
    ("semicolons", lambda: GOOD.replace(",", ";")),
    ("tabs", lambda: GOOD.replace(",", "\t")),
    ("pipes", lambda: GOOD.replace(",", "|")),
]


@pytest.mark.parametrize("make", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_variants_read_the_same_table(tmp_path, make):
    expected = parsed(GOOD, tmp_path)
    (tmp_path / "train.csv").unlink()
    table = parsed(make(), tmp_path)
    pd.testing.assert_frame_equal(table.frame, expected.frame)
    np.testing.assert_array_equal(table.labels, expected.labels)


def test_semicolon_file_is_read_and_said_so(tmp_path, caplog):
    path = write(tmp_path, GOOD.replace(",", ";"))
    with caplog.at_level(logging.INFO, logger="pricenet.tables"):
        table = read_csv(path, MOBILE_PRICE)
    assert len(table) == 40
    assert f"{path}: is separated by ';', not commas" in caplog.text


def test_decimal_commas_get_a_hint(tmp_path):
    rows = grid()
    rows[3][HEADER.index("m_dep")] = "0,5"
    path = write(tmp_path, "\n".join(";".join(row) for row in rows) + "\n")
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE)
    assert str(caught.value) == (
        f"{path}: column 'm_dep', line 4: '0,5' is not a number "
        "(a decimal comma? write it with a point)"
    )


def test_unknown_column_is_ignored_with_a_warning(tmp_path, caplog):
    rows = [row + (["vendor"] if i == 0 else ["acme"]) for i, row in enumerate(grid())]
    rows = [row + ([""] if i == 0 else ["x"]) for i, row in enumerate(rows)]
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        table = parsed(text_of(rows), tmp_path)
    assert list(table.frame.columns) == list(FEATURES)
    assert "ignoring unknown column(s) 'vendor', unnamed column 23" in caplog.text


def test_id_column_is_kept_and_label_is_optional_for_prediction(tmp_path):
    rows = [["id"] + row[:-1] for row in grid()]
    rows[1:] = [[str(i)] + row[1:] for i, row in enumerate(rows[1:], start=1)]
    path = write(tmp_path, text_of(rows))
    table = read_csv(path, MOBILE_PRICE, require_label=False)
    assert table.labels is None
    assert list(table.ids[:3]) == ["1", "2", "3"]


def test_a_column_named_id_is_kept_when_the_schema_names_none(tmp_path, caplog):
    no_id = dataclasses.replace(MOBILE_PRICE, id=None)
    rows = [["id"] + row for row in grid()]
    rows[1:] = [[f"x{i}"] + row[1:] for i, row in enumerate(rows[1:])]
    path = write(tmp_path, text_of(rows))
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        from_csv = read_csv(path, no_id)
        from_frame = validate_frame(pd.read_csv(path), no_id)
    assert "ignoring" not in caplog.text  # the old reader dropped it as an unknown column
    assert list(from_csv.ids[:2]) == list(from_frame.ids[:2]) == ["x0", "x1"]


def test_id_column_prefers_the_given_name_then_the_schema_then_id():
    no_id = dataclasses.replace(MOBILE_PRICE, id=None)
    assert id_column(no_id, ["id", "ram"]) == "id"
    assert id_column(no_id, ["ram"]) is None
    assert id_column(dataclasses.replace(MOBILE_PRICE, id="phone"), ["id", "phone"]) == "phone"
    assert id_column(no_id, ["id"], id="sku") == "sku"
    as_feature = dataclasses.replace(
        no_id, features=(*no_id.features[:-1], dataclasses.replace(no_id.features[-1], name="id"))
    )
    assert id_column(as_feature, ["id"]) is None  # a feature named id stays a feature


def test_nullable_integers_with_na_are_missing_values():
    frame = ONE_TABLE.astype({"ram": "Int64"})
    frame.loc[1, "ram"] = pd.NA
    with pytest.raises(DataError, match=r"^column 'ram', row 1: <NA> is a missing value$"):
        validate_frame(frame, MOBILE_PRICE)
    table = validate_frame(frame, MOBILE_PRICE, missing="impute")  # was "'<NA>' is not a number"
    assert np.isnan(table.frame.loc[1, "ram"]) and table.frame["ram"].isna().sum() == 1


def test_duplicate_and_unknown_columns_are_named_briefly():
    wide = ONE_TABLE.assign(**{f"{'v' * 5000}{i}": 0 for i in range(50)})
    with pytest.raises(DataError) as caught:
        validate_frame(pd.concat([wide, wide[["ram"]]], axis=1), MOBILE_PRICE)
    assert str(caught.value) == "column 'ram': appears more than once"
    huge = ONE_TABLE.astype({"ram": object})
    huge.index = ["i" * 100_000, *huge.index[1:]]
    huge.iloc[0, huge.columns.get_loc("ram")] = "x" * 100_000
    with pytest.raises(DataError) as caught:
        validate_frame(huge, MOBILE_PRICE)
    assert len(str(caught.value)) < 200


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
    rows = grid()
    rows[3][HEADER.index("ram")] = "x"
    lines = [
        ",".join(rows[0]) + ",note",  # line 1
        "",  # line 2
        ",".join(rows[1]) + ',"two\nlines"',  # lines 3-4: an ignored cell with a newline
        ",".join(rows[2]) + ",",  # line 5
        ",".join(rows[3]) + ",",  # line 6: the bad cell
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE)
    assert str(caught.value) == f"{path}: column 'ram', line 6: 'x' is not a number"


def test_first_problem_in_reading_order_is_reported(tmp_path):
    rows = grid()
    rows[6][HEADER.index("ram")] = "x"  # line 7
    rows[4][HEADER.index("wifi")] = "3"  # line 5, a later column but an earlier row
    path = write(tmp_path, text_of(rows))
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE)
    assert str(caught.value) == f"{path}: column 'wifi', line 5: '3' is not 0 or 1"


# --------------------------------------------------------------------------- one validator

ONE_TABLE = make_synthetic(30, seed=4).to_frame()

# (column, bad value, what both paths must say about it)
BOTH_PATHS = [
    ("blue", 7, "'7' is not 0 or 1"),
    ("ram", "abc", "'abc' is not a number"),
    (
        "ram",
        10**9,
        "'1000000000' is outside the range [256, 3998] "
        "(data.ranges=warn accepts it with a warning)",
    ),
    ("battery_power", 842.5, "'842.5' is not an integer"),
    ("clock_speed", float("inf"), "'inf' is not finite"),
    ("m_dep", 3.5e38, "'3.5e+38' is too large (beyond float32's range)"),
    ("price_range", 4, "label '4' is not an integer in 0..3"),
    ("px_width", "NA", "'NA' is a missing value"),
]


@pytest.mark.parametrize(("column", "value", "what"), BOTH_PATHS, ids=[c[0] for c in BOTH_PATHS])
def test_dataframe_api_refuses_what_the_csv_path_refuses(tmp_path, column, value, what):
    frame = ONE_TABLE.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[5, column] = value
    with pytest.raises(DataError) as from_frame:
        validate_frame(frame, MOBILE_PRICE)
    assert str(from_frame.value) == f"column {column!r}, row 5: {what}"

    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as from_csv:
        read_csv(path, MOBILE_PRICE)
    assert str(from_csv.value) == f"{path}: column {column!r}, line 7: {what}"


def test_dataframe_and_csv_give_the_same_table(tmp_path):
    path = tmp_path / "one.csv"
    ONE_TABLE.to_csv(path, index=False)
    from_csv = read_csv(path, MOBILE_PRICE)
    from_frame = validate_frame(ONE_TABLE, MOBILE_PRICE, source="frame")
    pd.testing.assert_frame_equal(from_csv.frame, from_frame.frame)
    np.testing.assert_array_equal(from_csv.labels, from_frame.labels)


def test_dataframe_missing_columns_and_none_cells(tmp_path):
    with pytest.raises(DataError, match=r"^column 'ram': missing from the DataFrame$"):
        validate_frame(ONE_TABLE.drop(columns="ram"), MOBILE_PRICE)
    frame = ONE_TABLE.astype({"fc": object})
    frame.loc[2, "fc"] = None
    with pytest.raises(DataError, match=r"^column 'fc', row 2: None is a missing value$"):
        validate_frame(frame, MOBILE_PRICE)
    table = validate_frame(frame, MOBILE_PRICE, missing="impute")
    assert np.isnan(table.frame.loc[2, "fc"]) and table.frame["fc"].isna().sum() == 1


# --------------------------------------------------------------------------- property-based

CELL = st.one_of(
    st.sampled_from(["", " ", "nan", "NA", "inf", "-inf", "1e999", "1.5", "-1", "4", "0x1f"]),
    st.sampled_from(["1_000", '"', '""', ",", "\n", "\r", "\x00", "\ufeff", "é", "1,2", ";"]),
    st.text(max_size=8),
    st.integers(-5, 5000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@st.composite
def malformed_csv(draw) -> bytes:
    """A good CSV with a few random edits: cells, lines, header, encoding, truncation.

    Cell edits are the most frequent, so that some files stay valid and are checked too.
    """
    rows = grid()
    for _ in range(draw(st.integers(1, 3))):
        if not rows:
            break
        edit = draw(st.sampled_from(["cell"] * 5 + ["header", "drop", "dup", "fields", "line"]))
        line = draw(st.integers(0, len(rows) - 1))
        if edit in ("cell", "header") and not rows[line if edit == "cell" else 0]:
            continue
        if edit == "cell":
            rows[line][draw(st.integers(0, len(rows[line]) - 1))] = draw(CELL)
        elif edit == "header":
            rows[0][draw(st.integers(0, len(rows[0]) - 1))] = draw(
                st.one_of(st.sampled_from([*HEADER, "", "id", " ram "]), st.text(max_size=6))
            )
        elif edit == "drop":
            rows.pop(line)
        elif edit == "dup":
            rows.insert(line, rows[line][:])
        elif edit == "fields":
            rows[line] = rows[line][: draw(st.integers(0, 25))] + draw(st.lists(CELL, max_size=3))
        else:
            rows.insert(line, draw(st.lists(CELL, max_size=22)))
    text = "\n".join(",".join(row) for row in rows)
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    if draw(st.sampled_from([False] * 9 + [True])):
        text = text[: draw(st.integers(0, len(text)))]
    encoding = draw(st.sampled_from(["utf-8"] * 5 + ["utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


def check_only_data_error(path: Path, content: bytes, **policies: str) -> None:
    path.write_bytes(content)
    try:
        table = read_csv(path, MOBILE_PRICE, **policies)
        stratified_split(table.labels, 0.15, 0.15, seed=0, source=table.source, label=LABEL)
    except DataError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
        return
    values = table.numeric_array(np.float64)
    assert len(table) >= 1 and values.shape == (len(table), len(FEATURES))
    assert list(table.frame.columns) == list(FEATURES)
    if policies.get("missing") != "impute":
        assert np.isfinite(values).all()
    assert not np.isinf(values).any()
    assert table.labels.dtype == np.int64
    assert ((table.labels >= 0) & (table.labels < MOBILE_PRICE.num_classes)).all()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=malformed_csv(), missing=st.sampled_from(["error", "impute"]))
def test_random_malformed_csv_raises_only_data_error(tmp_path, content, missing):
    check_only_data_error(tmp_path / "fuzz.csv", content, missing=missing, ranges="warn")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from([b"", GOOD.splitlines()[0].encode() + b"\n"]),
    body=st.binary(max_size=600),
)
def test_random_bytes_raise_only_data_error(tmp_path, prefix, body):
    check_only_data_error(tmp_path / "fuzz.csv", prefix + body)
