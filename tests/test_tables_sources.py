"""The data config's sources: schema given, inferred or read from a file; the per-process cache."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import yaml

from pricenet.errors import ConfigError, DataError
from pricenet.tables import MOBILE_PRICE, make_synthetic, sources


def test_load_table_builds_each_source_once_and_hands_out_copies(monkeypatch):
    monkeypatch.setattr(sources, "_TABLES", OrderedDict())
    calls = []
    real = sources.make_synthetic
    monkeypatch.setattr(sources, "make_synthetic", lambda *a: calls.append(a) or real(*a))
    source = {
        "_target_": "pricenet.tables.sources.synthetic",
        "n_rows": 40,
        "noise": 0.0,
        "seed": 1,
    }

    first = sources.load_table(source)
    first.frame.iloc[:, :] = -1.0
    second = sources.load_table(dict(source))
    other = sources.load_table({**source, "seed": 2})

    assert len(calls) == 2
    expected = real(40, 0.0, 1).frame
    np.testing.assert_array_equal(second.frame.to_numpy(), expected.to_numpy())
    assert not np.array_equal(other.frame.to_numpy(), second.frame.to_numpy())


def test_load_table_reads_a_changed_csv_again(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "_TABLES", OrderedDict())
    path = tmp_path / "train.csv"
    make_synthetic(40, seed=0).to_frame().to_csv(path, index=False)
    source = {"_target_": "pricenet.tables.sources.csv", "path": str(path), "label": "price_range"}
    assert len(sources.load_table(source)) == 40

    make_synthetic(60, seed=0).to_frame().to_csv(path, index=False)
    assert len(sources.load_table(source)) == 60


def test_a_schema_comes_from_a_mapping_a_yaml_file_or_inference(tmp_path):
    path = tmp_path / "train.csv"
    make_synthetic(40, seed=0).to_frame().to_csv(path, index=False)
    (tmp_path / "schema.yaml").write_text(MOBILE_PRICE.to_yaml())

    given = sources.csv(str(path), MOBILE_PRICE.to_dict())
    from_file = sources.csv(str(path), str(tmp_path / "schema.yaml"))
    inferred = sources.csv(str(path), None, label="price_range")
    assert given.schema == from_file.schema == MOBILE_PRICE
    assert inferred.schema.feature_names == MOBILE_PRICE.feature_names
    assert inferred.schema.feature("blue").kind == "binary"
    assert inferred.schema.feature("ram").low is None  # no ranges are inferred
    np.testing.assert_array_equal(given.labels, inferred.labels)


def test_a_missing_schema_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data.schema=nope.yaml: no such schema file"):
        sources.resolve_schema("nope.yaml")


def test_a_numeric_column_with_a_typo_is_numeric_and_the_typo_is_named(tmp_path):
    """Inference does not turn a column of numbers with one bad cell into a category."""
    frame = make_synthetic(40, seed=1).to_frame()
    frame["ram"] = frame["ram"].astype(str)
    frame.loc[2, "ram"] = "lots"
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"column 'ram', line 4: 'lots' is not a number"):
        sources.csv(str(tmp_path / "train.csv"), None, label="price_range")


def test_a_schema_file_names_the_label_so_data_label_may_stay_at_its_default(tmp_path):
    schema = MOBILE_PRICE.to_dict()
    schema["label"] = "price_class"
    frame = make_synthetic(40).to_frame().rename(columns={"price_range": "price_class"})
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema))
    # data=csv data.schema=FILE, data.label left at conf/data/csv.yaml's price_range
    table = sources.csv(str(tmp_path / "t.csv"), str(tmp_path / "s.yaml"), label="price_range")
    assert table.schema.label == "price_class" and len(table) == 40
    with pytest.raises(ConfigError, match="data.label='other': the schema's label is 'price_cl"):
        sources.csv(str(tmp_path / "t.csv"), str(tmp_path / "s.yaml"), label="other")


def test_the_synthetic_generator_refuses_a_table_too_big_to_make():
    with pytest.raises(ConfigError, match="data.n_rows=10000000000: the synthetic generator"):
        sources.synthetic(10**10)


def test_the_group_column_travels_beside_the_features_and_is_copied(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "_TABLES", OrderedDict())
    frame = make_synthetic(40, seed=0).to_frame()
    frame["site"] = [f"s{i % 7}" for i in range(40)]
    frame.to_csv(tmp_path / "train.csv", index=False)
    source = {
        "_target_": "pricenet.tables.sources.csv",
        "path": str(tmp_path / "train.csv"),
        "schema": MOBILE_PRICE.to_dict(),
        "group": "site",
    }
    first = sources.load_table(source)
    assert first.groups.tolist() == frame["site"].tolist()
    assert "site" not in first.frame.columns
    first.groups[:] = "x"
    assert sources.load_table(dict(source)).groups.tolist() == frame["site"].tolist()

    with pytest.raises(DataError, match=r"column 'ram' \(data.group\) is the schema's label or"):
        sources.load_table({**source, "group": "ram"})
