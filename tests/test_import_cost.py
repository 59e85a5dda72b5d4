"""What importing costs: the table readers load without torch, and reading a table shares
its float64 columns rather than copying them, without the table changing under the caller."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pricenet.tables
from pricenet.errors import DataError
from pricenet.tables import MOBILE_PRICE, make_synthetic, validate_frame
from pricenet.tables.read import read_table

HEAVY = ("torch", "sklearn", "matplotlib", "tensorboard")


def loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> dict[str, bool]:
    """Which of ``modules`` a fresh interpreter has imported after ``statement``."""
    report = f"print(json.dumps({{m: m in sys.modules for m in {modules!r}}}))"
    code = f"import json, sys\n{statement}\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import pricenet.tables",
        "import pricenet.tables.read",
        "from pricenet.tables import MOBILE_PRICE, Schema, Table, read_csv, validate_frame",
        "from pricenet.tables.parquet import read_parquet",
    ],
)
def test_the_readers_import_without_torch_or_sklearn(statement):
    assert loaded_after(statement) == dict.fromkeys(HEAVY, False)


def test_what_the_config_check_imports_brings_no_pandas():
    """The config check imports ``data.source``'s target and the tables' policies: a config
    error is reported without pandas."""
    statement = "import pricenet.tables.sources, pricenet.tables.duplicates, pricenet.config.config"
    assert loaded_after(statement, ("pandas", *HEAVY)) == dict.fromkeys(("pandas", *HEAVY), False)
    assert loaded_after("import pricenet.tables.read, pandas", ("pandas",)) == {"pandas": True}


def test_the_preprocessor_still_brings_torch():
    """The check above can fail: asking for ``Preprocessor`` does import torch."""
    assert loaded_after("from pricenet.tables import Preprocessor")["torch"] is True


def test_every_exported_name_resolves_and_an_unknown_one_is_refused():
    for name in pricenet.tables.__all__:
        value = getattr(pricenet.tables, name)
        assert value is getattr(pricenet.tables, name)  # loaded once, then kept
    assert set(pricenet.tables.__all__) <= set(dir(pricenet.tables))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pricenet.tables.nope  # noqa: B018
    from pricenet.tables import sources  # submodules still import through the package

    assert sources.__name__ == "pricenet.tables.sources"


def test_a_validated_table_does_not_change_with_the_frame_it_came_from():
    frame = make_synthetic(50, seed=3).to_frame()
    frame["clock_speed"] = frame["clock_speed"].astype("float64")
    table = validate_frame(frame, MOBILE_PRICE)
    before = table.frame["clock_speed"].to_numpy().copy()
    frame.loc[0, "clock_speed"] = 2.9 if before[0] != 2.9 else 0.5
    frame["clock_speed"] *= 0  # in place on the caller's column
    np.testing.assert_array_equal(table.frame["clock_speed"].to_numpy(), before)


def test_a_shared_float_column_is_still_checked_and_left_as_it_was():
    frame = make_synthetic(20, seed=3).to_frame()
    frame["m_dep"] = frame["m_dep"].astype("float64")
    frame.loc[2, "m_dep"] = np.nan
    frame.loc[4, "m_dep"] = -np.inf
    with pytest.raises(DataError, match=r"column 'm_dep', row 2: .*nan.* is a missing value"):
        validate_frame(frame, MOBILE_PRICE)
    with pytest.raises(DataError, match=r"column 'm_dep', row 4: '-inf' is not finite"):
        validate_frame(frame, MOBILE_PRICE, missing="impute")
    assert frame.loc[4, "m_dep"] == -np.inf
    frame.loc[4, "m_dep"] = 0.5
    imputed = validate_frame(frame, MOBILE_PRICE, missing="impute")
    assert np.isnan(imputed.frame["m_dep"][2]) and imputed.frame["m_dep"][4] == 0.5


def test_parquet_integers_beyond_float_precision_keep_their_digits(tmp_path):
    """Integer features are handed to the validator as float64 only when every value converts
    exactly; a value beyond 2**53 is reported with all its digits, as a CSV's would be."""
    frame = make_synthetic(30, seed=2).to_frame()
    frame["ram"] = frame["ram"].astype("int64")
    frame.loc[6, "ram"] = 2**53 + 1
    frame.to_parquet(tmp_path / "big.parquet", index=False)
    frame.to_csv(tmp_path / "big.csv", index=False)
    for path, row in ((tmp_path / "big.parquet", "row 7"), (tmp_path / "big.csv", "line 8")):
        with pytest.raises(DataError) as caught:
            read_table(path, MOBILE_PRICE)
        assert str(caught.value) == (
            f"{path}: column 'ram', {row}: '9007199254740993' is outside the range "
            "[256, 3998] (data.ranges=warn accepts it with a warning)"
        )


def test_parquet_integer_features_read_as_the_csvs_float64_columns(tmp_path):
    frame = make_synthetic(40, seed=4).to_frame()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv", index=False)
    from_parquet = read_table(tmp_path / "t.parquet", MOBILE_PRICE)
    from_csv = read_table(tmp_path / "t.csv", MOBILE_PRICE)
    pd.testing.assert_frame_equal(from_parquet.frame, from_csv.frame, check_exact=True)
    assert set(from_parquet.frame.dtypes) == {np.dtype(np.float64)}
    np.testing.assert_array_equal(from_parquet.labels, from_csv.labels)
