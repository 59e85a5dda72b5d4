"""Parquet tables (issue 20): the CSV path's schema, validation, inference and one-line errors,
the same checkpoint to the bit, predict's Parquet input and output, the schema command."""

from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pricenet.checkpoints.checkpoint import load_checkpoint
from pricenet.errors import DataError
from pricenet.predict import main as predict_main
from pricenet.run.pipeline import run
from pricenet.schema import main as schema_main
from pricenet.tables import MOBILE_PRICE, Feature, Schema, make_synthetic, read_csv
from pricenet.tables.parquet import read_parquet
from pricenet.tables.read import read_table

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
GOOD = make_synthetic(60, seed=1).to_frame()


def both(frame: pd.DataFrame, folder: Path, name: str = "t") -> tuple[Path, Path]:
    """``frame`` written as ``<name>.csv`` and ``<name>.parquet`` in ``folder``."""
    csv, parquet = folder / f"{name}.csv", folder / f"{name}.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return csv, parquet


def refused(path: Path, schema: Schema | None = MOBILE_PRICE, **options) -> str:
    """The one-line message reading ``path`` raises."""
    if schema is None:
        options.setdefault("label", "price_range")
    with pytest.raises(DataError) as caught:
        read_table(path, schema, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_same_table(a, b) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.schema == b.schema


# --------------------------------------------------------------------------- same table as CSV


@pytest.mark.slow
def test_parquet_and_csv_of_the_same_table_give_the_same_checkpoint_to_the_bit(
    compose_cfg, tmp_path
):
    frame = make_synthetic(300, seed=3).to_frame()
    frame.insert(0, "phone_id", [f"p{i}" for i in range(len(frame))])
    csv, parquet = both(frame, tmp_path)
    payloads = []
    for path in (csv, parquet):
        overrides = ("data=csv", f"data.path={path}", "trainer.epochs=3", "trainer.device=cpu")
        run_dir = tmp_path / f"run-{path.suffix[1:]}"
        run(compose_cfg(*overrides, *LEAN, shrink=False), run_dir)
        payloads.append(load_checkpoint(run_dir / "best.pt"))
    csv_payload, parquet_payload = payloads
    schema = Schema.from_dict(parquet_payload["schema"], "schema")
    assert schema == Schema.from_dict(csv_payload["schema"], "schema")
    assert schema.id == "phone_id" and len(schema.features) == 20
    assert csv_payload["data_sha256"] == parquet_payload["data_sha256"]

    tensors: list[str] = []

    def same(a, b, where: str) -> None:
        if where.endswith(".data.path") or where.endswith(".source.path"):
            return  # the file's own name
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), where
            tensors.append(where)
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        else:
            assert a == b or (a != a and b != b), where  # NaN equals NaN here

    same(csv_payload, parquet_payload, "best.pt")
    assert "best.pt.model.0.weight" in tensors and "best.pt.preprocessors[0].std" in tensors


def test_typed_columns_read_as_their_csv_does(tmp_path):
    """Narrow integers, float32, booleans, decimals, dictionary (categorical) columns, numbers
    stored as text and a large_string category give the CSV's table."""
    frame = GOOD.copy()
    frame["color"] = np.where(np.arange(len(frame)) % 3 == 0, "red", "blue")
    csv, _ = both(frame, tmp_path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    retyped = {
        "battery_power": pa.int16(),
        "blue": pa.bool_(),
        "n_cores": pa.uint8(),
        "clock_speed": pa.decimal128(6, 2),
        "m_dep": pa.float64(),
        "ram": pa.string(),
        "color": pa.large_string(),
    }
    for name, arrow_type in retyped.items():
        i = table.schema.get_field_index(name)
        column = table.column(i)
        if name == "clock_speed":
            column = pa.array([f"{v:.2f}" for v in frame[name]]).cast(arrow_type)
        table = table.set_column(i, name, column.cast(arrow_type))
    for name in ("talk_time", "color"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(i).dictionary_encode())
    pq.write_table(table, tmp_path / "typed.parquet")
    schema = Schema(
        (*MOBILE_PRICE.features, Feature("color", "categorical", categories=("blue", "red"))),
        MOBILE_PRICE.label,
        MOBILE_PRICE.classes,
        MOBILE_PRICE.ordered,
    )
    assert_same_table(read_csv(csv, schema), read_parquet(tmp_path / "typed.parquet", schema))


def test_an_inferred_schema_is_the_csvs(tmp_path, capsys):
    frame = GOOD.copy()
    frame["color"] = pd.Categorical(np.where(np.arange(len(frame)) % 3 == 0, "red", "blue"))
    csv, parquet = both(frame, tmp_path)
    from_csv = read_csv(csv, label="price_range")
    from_parquet = read_parquet(parquet, label="price_range")
    assert_same_table(from_csv, from_parquet)
    assert from_parquet.schema.feature("color").categories == ("blue", "red")

    schema_main([str(parquet), "label=price_range"])
    parquet_yaml = capsys.readouterr().out
    schema_main([str(csv), "label=price_range"])
    assert parquet_yaml == capsys.readouterr().out
    assert "kind: categorical" in parquet_yaml


def test_the_data_config_reads_parquet_by_suffix(compose_cfg, tmp_path):
    from pricenet.tables.sources import load_table

    _, parquet = both(GOOD, tmp_path)
    cfg = compose_cfg("data=csv", f"data.path={parquet}", "data/schema=mobile_price")
    from omegaconf import OmegaConf

    table = load_table(OmegaConf.to_container(cfg.data.source, resolve=True))
    assert table.source == str(parquet)
    assert_same_table(table, read_csv(tmp_path / "t.csv", MOBILE_PRICE))


def test_nulls_are_empty_cells_refused_or_imputed_like_the_csvs(tmp_path):
    frame = GOOD.copy()
    frame["ram"] = frame["ram"].astype("Int64")
    frame.loc[3, "ram"] = None
    frame["clock_speed"] = frame["clock_speed"].astype("float64")
    frame.loc[7, "clock_speed"] = None
    csv, parquet = both(frame, tmp_path)
    assert refused(parquet) == f"{parquet}: column 'ram', row 4: empty cell"
    assert refused(csv) == f"{csv}: column 'ram', line 5: empty cell"
    imputed = read_parquet(parquet, MOBILE_PRICE, missing="impute")
    assert np.isnan(imputed.frame["ram"][3]) and np.isnan(imputed.frame["clock_speed"][7])
    assert_same_table(read_csv(csv, MOBILE_PRICE, missing="impute"), imputed)


def test_a_null_in_a_dictionary_column_is_an_empty_cell(tmp_path):
    frame = GOOD.copy()
    frame["color"] = pd.Categorical(["red", "blue"] * (len(frame) // 2))
    frame.loc[4, "color"] = None
    _, parquet = both(frame, tmp_path)
    assert pa.types.is_dictionary(pq.read_schema(parquet).field("color").type)
    color = Feature("color", "categorical", categories=("blue", "red"))
    schema = Schema((*MOBILE_PRICE.features, color), "price_range", MOBILE_PRICE.classes, True)
    assert refused(parquet, schema) == f"{parquet}: column 'color', row 5: empty cell"
    imputed = read_parquet(parquet, schema, missing="impute")
    assert imputed.frame["color"].tolist()[3:6] == ["blue", None, "blue"]


# --------------------------------------------------------------------------- one-line errors


def test_bad_cells_name_the_column_and_the_row(tmp_path):
    frame = GOOD.copy()
    frame["ram"] = frame["ram"].astype(str)
    frame.loc[5, "ram"] = "12,5"
    _, parquet = both(frame, tmp_path, "text")
    assert refused(parquet) == (
        f"{parquet}: column 'ram', row 6: '12,5' is not a number "
        "(a decimal comma? write it with a point)"
    )
    frame = GOOD.copy()
    frame.loc[2, "blue"] = 3
    frame.loc[9, "price_range"] = 7
    _, parquet = both(frame, tmp_path, "range")
    assert refused(parquet) == f"{parquet}: column 'blue', row 3: '3' is not 0 or 1"
    frame.loc[2, "blue"] = 1
    frame.to_parquet(parquet)
    assert refused(parquet) == (
        f"{parquet}: column 'price_range', row 10: label '7' is not an integer in 0..3"
    )


def test_file_problems_are_one_line(tmp_path):
    missing = tmp_path / "absent.parquet"
    assert refused(missing) == f"{missing}: file not found"

    not_parquet = tmp_path / "text.parquet"
    GOOD.to_csv(not_parquet, index=False)
    assert refused(not_parquet).startswith(
        f"{not_parquet}: not a Parquet file, or a corrupt one (Parquet magic bytes not found"
    )

    _, good = both(GOOD, tmp_path)
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(data[:4] + bytes(len(data) // 2) + data[4 + len(data) // 2 :])
    assert refused(corrupt).startswith(f"{corrupt}: ")
    assert "corrupt" in refused(corrupt)

    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    assert refused(folder) == f"{folder}: is a directory, expected a Parquet file"

    size = good.stat().st_size
    assert refused(good, max_bytes=size - 1) == (
        f"{good}: is {size:,} bytes, over the limit of {size - 1:,} (raise it with data.max_bytes)"
    )
    assert len(read_table(good, MOBILE_PRICE, max_bytes=size)) == len(GOOD)

    many = tmp_path / "many.parquet"  # 200,000 rows of one value: a small file, a large table
    pq.write_table(pa.Table.from_pandas(GOOD.iloc[[0] * 200_000], preserve_index=False), many)
    assert many.stat().st_size < 100_000
    assert refused(many, max_bytes=1_000_000) == (
        f"{many}: 200,000 rows x 21 columns need 33,600,000 bytes in memory, over the limit "
        "of 1,000,000 (raise it with data.max_bytes)"
    )

    empty = tmp_path / "empty.parquet"
    GOOD.iloc[:0].to_parquet(empty)
    assert refused(empty) == f"{empty}: has columns but no data rows"

    assert refused(Path("/dev/zero")) == (
        "/dev/zero: is a device, not a regular file; pricenet reads CSV files only"
    )
    with pytest.raises(DataError, match="is a device, not a regular file; pricenet reads Parquet"):
        read_parquet("/dev/zero", MOBILE_PRICE)


def test_a_fifo_is_refused_without_opening(tmp_path):
    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            read_table(fifo, MOBILE_PRICE)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome.append(err)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # a regression would block in open(): unblock it, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("read_table opened the FIFO and blocked")
    assert str(outcome[0]) == (
        f"{fifo}: is a FIFO, not a regular file; pricenet reads Parquet files only"
    )


def test_missing_and_duplicate_columns_are_named(tmp_path):
    _, parquet = both(GOOD.drop(columns=["ram", "blue"]), tmp_path)
    assert refused(parquet) == f"{parquet}: columns 'blue', 'ram': missing from the Parquet file"
    assert refused(parquet, label="nope", schema=None) == (
        f"{parquet}: column 'nope': missing from the Parquet file"
    )
    table = pa.Table.from_pandas(GOOD, preserve_index=False)
    pq.write_table(table.append_column("ram", table.column("ram")), parquet)
    assert refused(parquet) == f"{parquet}: column 'ram': appears more than once"


def test_unknown_columns_are_not_read_and_are_named_in_a_warning(tmp_path, caplog):
    table = pa.Table.from_pandas(GOOD, preserve_index=False)
    table = table.append_column("tags", pa.array([[1, 2]] * len(GOOD)))
    pq.write_table(table, tmp_path / "extra.parquet")
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        read = read_parquet(tmp_path / "extra.parquet", MOBILE_PRICE)
    assert len(read) == len(GOOD)
    assert "ignoring unknown column(s) 'tags'" in caplog.text


def test_timestamps_are_text_as_categories_and_refused_as_numbers(tmp_path):
    days = [datetime.date(2024, 1, 1 + i % 2) for i in range(len(GOOD))]
    table = pa.Table.from_pandas(GOOD, preserve_index=False)
    table = table.append_column("sold", pa.array(days))
    path = tmp_path / "dates.parquet"
    pq.write_table(table, path)
    as_category = Feature("sold", "categorical", categories=("2024-01-01", "2024-01-02"))
    schema = Schema(
        (*MOBILE_PRICE.features, as_category), "price_range", MOBILE_PRICE.classes, True
    )
    assert read_parquet(path, schema).frame["sold"].tolist()[:2] == ["2024-01-01", "2024-01-02"]

    as_number = Schema(
        (*MOBILE_PRICE.features, Feature("sold", "integer")), "price_range", (0, 1, 2, 3), True
    )
    assert refused(path, as_number) == (
        f"{path}: column 'sold': is a date32[day] column, not numbers; store it as a number "
        "(e.g. seconds since 1970) or name it a categorical feature in the schema"
    )


def test_nested_columns_are_refused_naming_the_column(tmp_path, caplog):
    table = pa.Table.from_pandas(GOOD, preserve_index=False)
    i = table.schema.get_field_index("ram")
    table = table.set_column(i, "ram", pa.array([[int(v)] for v in GOOD["ram"]]))
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    assert refused(path) == (
        f"{path}: column 'ram': is a nested column (list<element: int64>); "
        "pricenet reads one number or text per cell"
    )
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        inferred = read_parquet(path, label="price_range")
    assert "ram" not in inferred.schema.feature_names
    assert "column(s) 'ram' (list<element: int64>): neither numbers nor text" in caplog.text


# --------------------------------------------------------------------------- predict


def test_predict_reads_parquet_and_writes_parquet_atomically(compose_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(compose_cfg("data.n_rows=300", "trainer.epochs=2", *LEAN), run_dir)
    frame = make_synthetic(50, seed=9).to_frame()
    frame.insert(0, "id", np.arange(1000, 1050))
    csv, parquet = both(frame, tmp_path, "input")
    out = tmp_path / "out"
    out.mkdir()
    for source, target in ((csv, out / "pred.csv"), (parquet, out / "pred.parquet")):
        predict_main([f"checkpoint={run_dir}", f"input={source}", f"output={target}"])
    assert "wrote 50 predictions" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["pred.csv", "pred.parquet"]  # no temp files

    from_csv = pd.read_csv(out / "pred.csv")
    from_parquet = pq.read_table(out / "pred.parquet").to_pandas()
    assert list(from_parquet.columns) == list(from_csv.columns)
    assert from_parquet["id"].tolist() == list(range(1000, 1050))  # the ids keep their type
    assert (from_parquet["price_range"] == from_csv["price_range"]).all()
    probs = [c for c in from_csv.columns if c.startswith("prob_")]
    np.testing.assert_allclose(from_parquet[probs], from_csv[probs], atol=5e-7)

    with pytest.raises(SystemExit) as exited:
        predict_main(
            [f"checkpoint={run_dir}", f"input={parquet}", f"output={out / 'pred.parquet'}"]
        )
    assert exited.value.code == 2
    assert "already exists; pass overwrite=true" in capsys.readouterr().err


def test_a_parquet_group_column_is_taken_out_like_the_csvs(tmp_path):
    """data.group reads the same from Parquet as from CSV: not a feature, every row grouped."""
    frame = make_synthetic(30, seed=1).to_frame()
    frame["site"] = [f"s{i % 4}" for i in range(30)]
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv", index=False)
    via_parquet = read_table(tmp_path / "t.parquet", None, label="price_range", group="site")
    via_csv = read_table(tmp_path / "t.csv", None, label="price_range", group="site")
    assert via_parquet.groups.tolist() == via_csv.groups.tolist() == frame["site"].tolist()
    assert "site" not in via_parquet.schema.feature_names
    assert via_parquet.schema.feature_names == via_csv.schema.feature_names
    frame.loc[4, "site"] = None
    frame.to_parquet(tmp_path / "gap.parquet", index=False)
    with pytest.raises(DataError, match=r"column 'site' \(data.group\), row 5: empty"):
        read_table(tmp_path / "gap.parquet", None, label="price_range", group="site")


def test_an_over_wide_parquet_file_is_refused_from_its_footer(tmp_path, monkeypatch):
    import pricenet.tables.validate as validate

    _, path = both(GOOD, tmp_path)
    monkeypatch.setattr(validate, "MAX_COLUMNS", GOOD.shape[1])
    assert len(read_table(path, MOBILE_PRICE)) == 60  # the limit is inclusive
    monkeypatch.setattr(validate, "MAX_COLUMNS", GOOD.shape[1] - 1)

    def no_reads(*_args, **_kwargs):
        raise AssertionError("a column was read")

    monkeypatch.setattr(pq.ParquetFile, "read", no_reads)
    message = (
        f"{path}: its footer lists 21 columns, over the limit of 20 "
        "(a network takes at most that many inputs)"
    )
    assert refused(path) == message
    assert refused(path, None) == message
    with pytest.raises(DataError, match="its footer lists 21 columns"):
        from pricenet.tables import infer_schema

        infer_schema(path, "price_range")
