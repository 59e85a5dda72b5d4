"""Schema: strict from_dict, YAML round trip, MOBILE_PRICE equals the old constants, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pricenet.errors import ConfigError, DataError
from pricenet.tables import MOBILE_PRICE, Feature, Schema

CONF = Path(__file__).resolve().parents[1] / "conf" / "data" / "schema" / "mobile_price.yaml"


def test_yaml_file_equals_mobile_price():
    assert Schema.from_dict(yaml.safe_load(CONF.read_text()), str(CONF)) == MOBILE_PRICE
    assert Schema.from_yaml(CONF) == MOBILE_PRICE


# The phone-price schema as pricenet hard-coded it before it became a config.
OLD_SCHEMA = [
    ("battery_power", "integer", 501, 1998),
    ("blue", "binary", 0, 1),
    ("clock_speed", "numeric", 0.5, 3.0),
    ("dual_sim", "binary", 0, 1),
    ("fc", "integer", 0, 19),
    ("four_g", "binary", 0, 1),
    ("int_memory", "integer", 2, 64),
    ("m_dep", "numeric", 0.1, 1.0),
    ("mobile_wt", "integer", 80, 200),
    ("n_cores", "integer", 1, 8),
    ("pc", "integer", 0, 20),
    ("px_height", "integer", 0, 1960),
    ("px_width", "integer", 500, 1998),
    ("ram", "integer", 256, 3998),
    ("sc_h", "integer", 5, 19),
    ("sc_w", "integer", 0, 18),
    ("talk_time", "integer", 2, 20),
    ("three_g", "binary", 0, 1),
    ("touch_screen", "binary", 0, 1),
    ("wifi", "binary", 0, 1),
]


def test_mobile_price_matches_the_old_hard_coded_schema():
    assert [(f.name, f.kind, f.low, f.high) for f in MOBILE_PRICE.features] == OLD_SCHEMA
    assert MOBILE_PRICE.label == "price_range"
    assert MOBILE_PRICE.classes == (0, 1, 2, 3) and MOBILE_PRICE.ordered
    assert MOBILE_PRICE.id == "id"


def test_to_dict_is_plain_and_round_trips():
    d = MOBILE_PRICE.to_dict()

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)

    assert plain(d)
    assert Schema.from_dict(d, "ckpt") == MOBILE_PRICE
    assert Schema.from_dict(yaml.safe_load(MOBILE_PRICE.to_yaml()), "y") == MOBILE_PRICE


def good() -> dict:
    return {
        "label": "quality",
        "classes": [3, 4, 5],
        "ordered": True,
        "id": "wine_id",
        "features": [
            {"name": "alcohol", "kind": "numeric", "low": 0, "high": 20},
            {"name": "color", "kind": "categorical", "categories": ["red", "white"]},
        ],
    }


def edited(path: str, value) -> dict:
    d = good()
    node = d
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return d


DELETE = object()
BAD_SCHEMAS = [
    ("unknown-key", "colour", "x", "where.colour: unknown key"),
    ("missing-features", "features", DELETE, "where.features: missing"),
    ("missing-label", "label", DELETE, "where.label: missing"),
    ("empty-features", "features", [], "where.features: expected a non-empty list"),
    ("features-string", "features", "alcohol", "where.features: expected a non-empty list"),
    ("unknown-kind", "features.0.kind", "float", "where.features[0].kind: 'float' is not one of"),
    ("feature-unknown-key", "features.0.min", 1, "where.features[0].min: unknown key"),
    ("feature-no-name", "features.0.name", DELETE, "where.features[0].name: missing"),
    ("feature-name-int", "features.0.name", 3, "where.features[0].name: 3 is not a string"),
    ("low-above-high", "features.0.low", 30, "where.features[0].low: 30.0 is above high: 20.0"),
    ("low-text", "features.0.low", "0", "where.features[0].low: '0' is not a number"),
    ("low-bool", "features.0.low", True, "where.features[0].low: True is not a number"),
    ("high-inf", "features.0.high", float("inf"), "where.features[0].high: inf is not finite"),
    ("high-nan", "features.0.high", float("nan"), "where.features[0].high: nan is not finite"),
    (
        "categories-on-numeric",
        "features.0.categories",
        ["a"],
        "where.features[0].categories: only a categorical feature has categories",
    ),
    (
        "range-on-categorical",
        "features.1.low",
        0,
        "where.features[1].low: a categorical feature has no range",
    ),
    (
        "no-categories",
        "features.1.categories",
        [],
        "where.features[1].categories: a categorical feature needs",
    ),
    (
        "bool-category",
        "features.1.categories",
        [True, "x"],
        "where.features[1].categories[0]: True is not a non-empty string",
    ),
    (
        "duplicate-category",
        "features.1.categories",
        ["a", "a"],
        "where.features[1].categories: 'a' appears more than once",
    ),
    (
        "unknown-policy",
        "features.1.unknown",
        "drop",
        "where.features[1].unknown: 'drop' is not one of error, map",
    ),
    (
        "duplicate-feature",
        "features.1.name",
        "alcohol",
        "where.features[1].name: 'alcohol' appears more than once",
    ),
    ("label-is-feature", "label", "alcohol", "where.label: 'alcohol' is also a feature"),
    ("id-is-label", "id", "quality", "where.id: 'quality' is also a feature or the label"),
    ("empty-classes", "classes", [], "where.classes: []: at least two classes are needed"),
    ("one-class", "classes", [3], "where.classes: [3]: at least two classes are needed"),
    ("mixed-classes", "classes", [3, "4"], "where.classes: [3, '4']: all integers or all"),
    ("bool-classes", "classes", [True, False], "where.classes: [True, False]: all integers"),
    ("float-classes", "classes", [1.0, 2.0], "where.classes: [1.0, 2.0]: all integers"),
    ("duplicate-class", "classes", [3, 3], "where.classes: 3 appears more than once"),
    ("ordered-text", "ordered", "yes", "where.ordered: 'yes' is not true or false"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), [c[1:] for c in BAD_SCHEMAS], ids=[c[0] for c in BAD_SCHEMAS]
)
def test_from_dict_is_strict(path, value, message):
    with pytest.raises(ConfigError) as caught:
        Schema.from_dict(edited(path, value), "where")
    assert str(caught.value).startswith(message), str(caught.value)


def test_from_dict_refuses_non_mappings():
    for bad in (None, [], "schema", 3):
        with pytest.raises(ConfigError, match=r"^ckpt: expected a mapping"):
            Schema.from_dict(bad, "ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt\.features\[0\]: expected a mapping"):
        Schema.from_dict({**good(), "features": ["alcohol"]}, "ckpt")


def test_schema_yaml_with_unknown_kind_names_the_file(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(MOBILE_PRICE.to_yaml().replace("kind: numeric", "kind: real", 1))
    with pytest.raises(ConfigError) as caught:
        Schema.from_yaml(path)
    assert str(caught.value) == (
        f"{path}.features[2].kind: 'real' is not one of numeric, integer, binary, categorical"
    )


def test_constructors_check_too():
    with pytest.raises(ConfigError, match="feature 'x': low: 2.0 is above high: 1.0"):
        Feature("x", "numeric", 2.0, 1.0)
    with pytest.raises(ConfigError, match="schema: label: 'x' is also a feature"):
        Schema((Feature("x", "numeric"),), "x", (0, 1), True)


def test_encode_and_decode_labels_keep_types():
    wine = Schema.from_dict(good(), "w")
    idx = wine.encode_labels(["3", 5, 4.0, " 5 "], "f.csv")
    assert idx.dtype == np.int64 and idx.tolist() == [0, 2, 1, 2]
    back = wine.decode_labels(idx)
    assert back.dtype == np.int64 and back.tolist() == [3, 5, 4, 5]
    iris = Schema((Feature("x", "numeric"),), "species", ("setosa", "versicolor"), False)
    idx = iris.encode_labels(["versicolor", "setosa"], "f.csv")
    assert idx.tolist() == [1, 0]
    assert iris.decode_labels(idx).tolist() == ["versicolor", "setosa"]
    assert all(isinstance(v, str) for v in iris.decode_labels(idx))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2, "f.csv: column 'quality', row 1: label '2' is not an integer in 3..5"),
        ("2.5", "f.csv: column 'quality', row 1: label '2.5' is not an integer in 3..5"),
        ("x", "f.csv: column 'quality', row 1: 'x' is not a number"),
        ("", "f.csv: column 'quality', row 1: empty cell"),
    ],
)
def test_encode_labels_errors_name_row_and_value(value, message):
    with pytest.raises(DataError) as caught:
        Schema.from_dict(good(), "w").encode_labels([3, value], "f.csv")
    assert str(caught.value) == message


def test_string_label_errors_list_the_classes():
    iris = Schema((Feature("x", "numeric"),), "species", ("setosa", "versicolor"), False)
    with pytest.raises(DataError) as caught:
        iris.encode_labels(["setosa", "virginica"], "f.csv", line_of=lambda i: i + 2)
    assert str(caught.value) == (
        "f.csv: column 'species', line 3: label 'virginica' is not one of the classes "
        "'setosa', 'versicolor'"
    )
