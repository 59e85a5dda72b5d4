"""Reading any table: file checks, inference on scikit-learn's tables, policies, categoricals."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from pricenet.errors import ConfigError, DataError
from pricenet.schema import main as schema_main
from pricenet.tables import (
    MOBILE_PRICE,
    Feature,
    Schema,
    infer_schema,
    make_synthetic,
    read_csv,
    validate_frame,
)

GOOD = make_synthetic(40, seed=1).to_frame()


# --------------------------------------------------------------------------- file checks


def test_dev_zero_is_refused_without_reading():
    with pytest.raises(DataError) as caught:
        read_csv("/dev/zero", MOBILE_PRICE)
    assert str(caught.value) == (
        "/dev/zero: is a device, not a regular file; pricenet reads CSV files only"
    )


def test_fifo_is_refused_without_opening(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            read_csv(fifo, MOBILE_PRICE)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome.append(err)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # a regression would block in open(): unblock it, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("read_csv opened the FIFO and blocked")
    assert isinstance(outcome[0], DataError)
    assert (
        str(outcome[0]) == f"{fifo}: is a FIFO, not a regular file; pricenet reads CSV files only"
    )


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    GOOD.to_csv(path, index=False)
    size = path.stat().st_size
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE, max_bytes=size - 1)
    assert str(caught.value) == (
        f"{path}: is {size:,} bytes, over the limit of {size - 1:,} (raise it with data.max_bytes)"
    )
    assert len(read_csv(path, MOBILE_PRICE, max_bytes=size)) == 40


def _no_body_reads(monkeypatch) -> None:
    """Make pandas' CSV reader fail: a test passing with it never read a file's body."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("pandas read the body")

    monkeypatch.setattr(pd, "read_csv", refuse)


def test_an_over_wide_header_is_refused_before_the_body_is_read(tmp_path, monkeypatch, capsys):
    from pricenet.nn.spec import MAX_WIDTH
    from pricenet.tables.validate import MAX_COLUMNS

    assert MAX_COLUMNS == MAX_WIDTH  # no wider table could be trained or predicted on
    names = [*GOOD.columns, *(f"extra_{i}" for i in range(MAX_COLUMNS + 1 - GOOD.shape[1]))]
    path = tmp_path / "wide.csv"
    # a body that would be an error if it were read: text, and two fields where 65,537 are
    path.write_text(",".join(names) + "\n" + "oops,1\n" * 1000)
    _no_body_reads(monkeypatch)
    message = (
        f"{path}: line 1: the header has {MAX_COLUMNS + 1:,} columns, over the limit of "
        f"{MAX_COLUMNS:,} (a network takes at most that many inputs)"
    )
    for schema, options in ((MOBILE_PRICE, {}), (None, {"label": "price_range"})):
        with pytest.raises(DataError) as caught:
            read_csv(path, schema, **options)
        assert str(caught.value) == message
    with pytest.raises(SystemExit) as exited:
        schema_main([str(path), "label=price_range"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_the_column_limit_is_inclusive_and_counts_the_header(tmp_path, monkeypatch):
    import pricenet.tables.validate as validate

    path = tmp_path / "t.csv"
    GOOD.to_csv(path, index=False)
    monkeypatch.setattr(validate, "MAX_COLUMNS", GOOD.shape[1])
    assert len(read_csv(path, MOBILE_PRICE)) == 40
    monkeypatch.setattr(validate, "MAX_COLUMNS", GOOD.shape[1] - 1)
    with pytest.raises(DataError, match=r"line 1: the header has 21 columns, over the limit of 20"):
        read_csv(path, MOBILE_PRICE)


def test_a_header_too_long_is_refused_without_reading_its_line_whole(tmp_path, monkeypatch):
    import pricenet.tables.read as read

    monkeypatch.setattr(read, "MAX_HEADER_CHARS", 1000)
    path = tmp_path / "long.csv"
    GOOD.to_csv(path, index=False)
    assert len(read_csv(path, MOBILE_PRICE)) == 40  # its header: 200 characters
    lines = []
    monkeypatch.setattr(read, "_open_text", lambda p: _Recording(open(p), lines))  # noqa: SIM115
    for header in ("x" * 5000, "\n" * 1200 + "a,b\n", '"' + "a\n" * 1000):
        path.write_text(header + "\n1\n")
        lines.clear()
        with pytest.raises(DataError) as caught:
            read_csv(path, MOBILE_PRICE)
        assert str(caught.value) == (
            f"{path}: the header is over 1,000 characters (at most 65,536 columns are read)"
        )
        assert sum(map(len, lines)) <= 1001  # never a line past the limit


class _Recording:
    """A text file whose ``readline`` results are recorded (and that refuses other reads)."""

    def __init__(self, f, lines: list[str]) -> None:
        self.f, self.lines = f, lines

    def readline(self, size: int = -1) -> str:
        assert size > 0, "an unbounded readline"
        line = self.f.readline(size)
        self.lines.append(line)
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_unknown_policies_are_config_errors(tmp_path):
    path = tmp_path / "t.csv"
    GOOD.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"^data.missing='drop': expected one of error, impute"):
        read_csv(path, MOBILE_PRICE, missing="drop")
    with pytest.raises(ConfigError, match=r"^data.ranges='clip': expected one of error, warn"):
        read_csv(path, MOBILE_PRICE, ranges="clip")


# --------------------------------------------------------------------------- ranges


def test_out_of_range_is_an_error_a_warning_or_ignored(tmp_path, caplog):
    frame = GOOD.copy()
    frame.loc[3, "ram"] = 10**9
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE)
    assert str(caught.value) == (
        f"{path}: column 'ram', line 5: '1000000000' is outside the range [256, 3998] "
        "(data.ranges=warn accepts it with a warning)"
    )
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        table = read_csv(path, MOBILE_PRICE, ranges="warn")
    assert table.frame.loc[3, "ram"] == 10**9
    assert "column 'ram': 1 value(s) outside the range [256, 3998]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        read_csv(path, MOBILE_PRICE, ranges="ignore")
    assert caplog.text == ""


# --------------------------------------------------------------------------- missing values


def with_missing(tmp_path: Path) -> Path:
    frame = GOOD.astype({"ram": object, "clock_speed": object})
    frame.loc[2, "ram"] = ""
    frame.loc[7, "clock_speed"] = "NA"
    path = tmp_path / "missing.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_values_error_by_default_and_impute_on_request(tmp_path):
    path = with_missing(tmp_path)
    with pytest.raises(DataError) as caught:
        read_csv(path, MOBILE_PRICE)
    assert str(caught.value) == f"{path}: column 'ram', line 4: empty cell"
    table = read_csv(path, MOBILE_PRICE, missing="impute")
    assert np.isnan(table.frame.loc[2, "ram"]) and np.isnan(table.frame.loc[7, "clock_speed"])
    assert int(table.frame.isna().sum().sum()) == 2
    assert table.frame.loc[3, "ram"] == GOOD.loc[3, "ram"]


def test_impute_still_refuses_short_rows_and_bad_text(tmp_path):
    path = tmp_path / "short.csv"
    lines = GOOD.to_csv(index=False).splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-2])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 6: 19 fields, but the header has 21$"):
        read_csv(path, MOBILE_PRICE, missing="impute")
    frame = GOOD.astype({"ram": object})
    frame.loc[2, "ram"] = "lots"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'ram', line 4: 'lots' is not a number$"):
        read_csv(path, MOBILE_PRICE, missing="impute")


# --------------------------------------------------------------------------- categorical


def churn_schema(unknown: str = "error") -> Schema:
    return Schema(
        (
            Feature("tenure", "integer", 0, 100),
            Feature("plan", "categorical", categories=("basic", "pro"), unknown=unknown),
        ),
        label="churn",
        classes=("no", "yes"),
        ordered=False,
        id="customer_id",
    )


def churn_csv(tmp_path: Path, plan_of_row_2: str) -> Path:
    path = tmp_path / "churn.csv"
    plans = ["basic", "pro", plan_of_row_2, "pro"]
    rows = [f"c{i},{i * 3},{plan},{'yes' if i % 2 else 'no'}" for i, plan in enumerate(plans)]
    path.write_text("customer_id,tenure,plan,churn\n" + "\n".join(rows) + "\n")
    return path


def test_unseen_category_is_an_error_naming_column_line_value(tmp_path):
    path = churn_csv(tmp_path, "gold")
    with pytest.raises(DataError) as caught:
        read_csv(path, churn_schema())
    assert str(caught.value) == (
        f"{path}: column 'plan', line 4: 'gold' is not one of the categories 'basic', 'pro' "
        "(unknown: map in the schema accepts new values)"
    )


def test_unseen_category_is_kept_under_map(tmp_path):
    table = read_csv(churn_csv(tmp_path, "gold"), churn_schema("map"))
    assert table.frame["plan"].tolist() == ["basic", "pro", "gold", "pro"]
    assert table.labels.tolist() == [0, 1, 0, 1]
    assert table.ids.tolist() == ["c0", "c1", "c2", "c3"]
    assert table.to_frame()["churn"].tolist() == ["no", "yes", "no", "yes"]


def test_missing_category_under_both_policies(tmp_path):
    path = churn_csv(tmp_path, "")
    with pytest.raises(DataError, match=r"column 'plan', line 4: empty cell$"):
        read_csv(path, churn_schema())
    table = read_csv(path, churn_schema(), missing="impute")
    assert table.frame["plan"].tolist() == ["basic", "pro", None, "pro"]


# --------------------------------------------------------------------------- inference


def sklearn_csv(tmp_path: Path, name: str) -> tuple[Path, pd.DataFrame]:
    """A scikit-learn dataset written as CSV; iris with its target names as string labels."""
    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }[name]
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    if name == "iris":
        frame["target"] = np.asarray(bunch.target_names)[bunch.target]
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.mark.parametrize(
    ("name", "classes", "n_features"),
    [
        ("iris", ("setosa", "versicolor", "virginica"), 4),
        ("wine", (0, 1, 2), 13),
        ("breast_cancer", (0, 1), 30),
    ],
)
def test_sklearn_tables_are_inferred_and_read(tmp_path, name, classes, n_features):
    path, frame = sklearn_csv(tmp_path, name)
    schema = infer_schema(path, "target")
    assert schema.classes == classes
    assert schema.ordered == isinstance(classes[0], int)
    assert len(schema.features) == n_features
    assert all(f.numeric and f.low is None and f.high is None for f in schema.features)
    table = read_csv(path, label="target")  # no schema: inferred the same way
    assert table.schema == schema
    assert len(table) == len(frame)
    np.testing.assert_allclose(
        table.frame.to_numpy(), frame.drop(columns="target").to_numpy(dtype=np.float64)
    )
    assert table.schema.decode_labels(table.labels).tolist() == frame["target"].tolist()
    back = Schema.from_dict(schema.to_dict(), "ckpt")
    assert read_csv(path, back).labels.tolist() == table.labels.tolist()


def test_wine_kinds_are_inferred(tmp_path):
    path, _ = sklearn_csv(tmp_path, "wine")
    kinds = {f.name: f.kind for f in infer_schema(path, "target").features}
    assert kinds["alcohol"] == "numeric" and kinds["proline"] == "integer"


def test_integer_labels_not_starting_at_zero(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "acidity": rng.normal(7, 1, 60).round(2),
            "sulphates": rng.integers(0, 2, 60),
            "quality": np.tile(np.arange(3, 9), 10),
        }
    )
    path = tmp_path / "quality.csv"
    frame.to_csv(path, index=False)
    table = read_csv(path, label="quality")
    assert table.schema.classes == (3, 4, 5, 6, 7, 8) and table.schema.ordered
    assert table.schema.feature("sulphates").kind == "binary"
    assert table.labels.tolist()[:6] == [0, 1, 2, 3, 4, 5]
    assert table.to_frame()["quality"].tolist() == frame["quality"].tolist()
    frame.loc[4, "quality"] = 9
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        read_csv(path, table.schema)
    assert (
        str(caught.value)
        == f"{path}: column 'quality', line 6: label '9' is not an integer in 3..8"
    )


def test_inference_finds_ids_categories_and_drops_free_text(tmp_path, caplog):
    n = 80
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "plan": ["basic", "pro", "", "pro"] * (n // 4),
            "note": [f"free text {i}" for i in range(n)],
            "charges": np.linspace(10, 99, n),
            "churn": ["yes", "no"] * (n // 2),
        }
    )
    path = tmp_path / "churn.csv"
    frame.to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        schema = infer_schema(path, "churn")
    assert schema.id == "customer_id"
    assert [f.name for f in schema.features] == ["plan", "charges"]
    assert schema.feature("plan").categories == ("basic", "pro")
    assert schema.classes == ("no", "yes") and not schema.ordered
    assert "column 'note': text with 80 distinct values (more than 50)" in caplog.text
    with pytest.raises(DataError, match=r"column 'plan', line 4: empty cell$"):
        read_csv(path, schema)
    assert read_csv(path, schema, missing="impute").frame["plan"].isna().sum() == n // 4


@pytest.mark.parametrize(
    ("label", "column", "message"),
    [
        ("nope", None, "column 'nope' (the label): no such column; there are 'x', 'y'"),
        ("y", "one", "column 'y': every row has the value 1; a label needs at least two classes"),
        ("y", "float", "column 'y': has non-integer numbers; pricenet classifies"),
    ],
)
def test_inference_errors(tmp_path, label, column, message):
    y = {None: [0, 1, 0, 1], "one": [1, 1, 1, 1], "float": [0.5, 1.5, 0.5, 1.5]}[column]
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5], "y": y}).to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        infer_schema(path, label)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_text_where_the_schema_says_numeric(tmp_path):
    schema = Schema((Feature("x", "numeric"),), "y", (0, 1), True)
    frame = pd.DataFrame({"x": ["1.5", "red", "2"], "y": [0, 1, 0]})
    with pytest.raises(DataError, match=r"^column 'x', row 1: 'red' is not a number$"):
        validate_frame(frame, schema)


# ------------------------------------------------------------------ python -m pricenet.schema


def test_schema_command_prints_yaml_that_reads_back(tmp_path, capsys):
    path, _ = sklearn_csv(tmp_path, "iris")
    schema_main([str(path), "label=target"])
    out = capsys.readouterr().out
    (tmp_path / "schema.yaml").write_text(out)
    assert Schema.from_yaml(tmp_path / "schema.yaml") == infer_schema(path, "target")
    assert "classes: [setosa, versicolor, virginica]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label=target"], "error: missing FILE"),
        (["{csv}"], "error: missing label=..."),
        (["{csv}", "label=nope"], "error: {csv}: column 'nope' (the label): no such column"),
        (["/dev/zero", "label=x"], "error: /dev/zero: is a device, not a regular file"),
        (["{csv}", "label=target", "colour=1"], "error: Key 'colour' not in 'SchemaOptions'"),
    ],
)
def test_schema_command_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    path, _ = sklearn_csv(tmp_path, "wine")
    with pytest.raises(SystemExit) as exited:
        schema_main([a.format(csv=path) for a in args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(csv=path)) and err.count("\n") == 1
