"""Repeated feature rows (data.duplicates): found, logged, grouped, kept, dropped or refused;
the leakage check in metrics.json."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pricenet.errors import DataError
from pricenet.run.fits import load_data, plan_for
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe
from pricenet.tables.duplicates import scan

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
FEATURES = [f"x{i}" for i in range(6)]


def repeated_frame(unique: int = 120, copies: int = 3, seed: int = 0) -> pd.DataFrame:
    """``unique`` rows of noise with random labels (nothing to learn), each ``copies`` times,
    shuffled: only a model that remembers a row's twin can score above chance."""
    rng = np.random.default_rng(seed)
    base = pd.DataFrame(rng.normal(size=(unique, len(FEATURES))).round(3), columns=FEATURES)
    base["target"] = rng.permutation(np.arange(unique) % 4)
    frame = pd.concat([base] * copies, ignore_index=True)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def csv_cfg(compose_cfg, path, *overrides: str):
    return compose_cfg(
        "data=csv",
        f"data.path={path}",
        "data.label=target",
        "trainer.epochs=2",
        *LEAN,
        *overrides,
        shrink=False,
    )


def test_the_scan_counts_rows_sets_and_label_conflicts(compose_cfg, tmp_path):
    frame = repeated_frame(unique=50, copies=2).head(80).reset_index(drop=True)
    frame.loc[frame.index[:2], FEATURES] = frame.loc[frame.index[2], FEATURES].to_numpy()
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = load_data(
        Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv", "data.duplicates=keep")).data
    )
    expected = frame.duplicated(subset=FEATURES)
    found = scan(table)
    assert found.rows == int(expected.sum())
    sets = frame[frame.duplicated(subset=FEATURES, keep=False)].groupby(FEATURES)
    assert found.sets == sets.ngroups
    assert found.conflicting == int((sets["target"].nunique() > 1).sum())
    assert found.conflicting >= 1  # rows 0..2 share features but not (all) labels
    for a, b in [(0, 1), (0, 2)]:
        assert found.codes[a] == found.codes[b]


def test_one_log_line_and_every_set_in_one_fold_per_repeat(compose_cfg, tmp_path, caplog):
    repeated_frame(unique=100, copies=2).to_csv(tmp_path / "t.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "t.csv", "cv=kfold", "cv.repeats=2")
    with caplog.at_level(logging.INFO, logger="pricenet"):
        table = load_data(Recipe.of(cfg).data)
    said = [r.getMessage() for r in caplog.records if "repeat another row" in r.getMessage()]
    assert said == [
        "100 rows (50.0%) repeat another row's features; "
        "CV keeps each set in one fold (data.duplicates=group)"
    ]
    codes = table.duplicates.codes
    plan = plan_for(Recipe.of(cfg), table)
    for repeat in (0, 1):
        tests = [m.test for m in plan if m.repeat == repeat]
        for code in np.unique(codes):
            rows = set(np.flatnonzero(codes == code))
            assert sum(bool(rows & set(t)) for t in tests) == 1  # in exactly one fold
    for member in plan:  # the inner validation split keeps sets whole too
        train, val, test = (set(codes[r]) for r in (member.train, member.val, member.test))
        assert not train & val and not train & test and not val & test and val
    keep = plan_for(
        Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv", "cv=kfold", "data.duplicates=keep")),
        load_data(Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv", "data.duplicates=keep")).data),
    )
    assert any(set(codes[m.train]) & set(codes[m.test]) for m in keep)  # the payload


def test_drop_keeps_the_first_of_each_set_and_refuses_disagreeing_labels(compose_cfg, tmp_path):
    frame = repeated_frame(unique=60, copies=2)
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = load_data(
        Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv", "data.duplicates=drop")).data
    )
    first = ~frame.duplicated(subset=FEATURES)
    np.testing.assert_array_equal(table.frame.to_numpy(), frame.loc[first, FEATURES].to_numpy())
    assert (table.duplicates.dropped, len(table)) == (60, 60)
    assert scan(table).rows == 0

    clash = frame.copy()
    twin = int(np.flatnonzero(frame.duplicated(subset=FEATURES))[0])
    original = int(np.flatnonzero((frame[FEATURES] == frame.loc[twin, FEATURES]).all(axis=1))[0])
    clash.loc[twin, "target"] = (frame.loc[twin, "target"] + 1) % 4
    clash.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_data(Recipe.of(csv_cfg(compose_cfg, tmp_path / "c.csv", "data.duplicates=drop")).data)
    assert str(caught.value) == (
        f"{tmp_path / 'c.csv'}: rows {original + 1}, {twin + 1} have the same features but "
        "different labels in column 'target', and data.duplicates=drop cannot choose one; "
        "fix them, or use data.duplicates=group"
    )


def test_error_refuses_repeated_rows_and_a_bad_policy_is_a_config_error(compose_cfg, tmp_path):
    from pricenet.errors import ConfigError

    repeated_frame(unique=30, copies=2).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"30 rows \(50.0%\) repeat another row's features, e.g. "):
        load_data(Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv", "data.duplicates=error")).data)
    with pytest.raises(ConfigError, match=r"data.duplicates='merge' is invalid: must be one of"):
        run(csv_cfg(compose_cfg, tmp_path / "t.csv", "data.duplicates=merge"), tmp_path / "r")


@pytest.mark.slow
def test_memorising_duplicates_pays_under_keep_and_not_under_group(compose_cfg, tmp_path, caplog):
    """A wide MLP trained long remembers each row's label: with a twin in its training rows
    (keep) it scores far above chance on noise; with sets kept whole (group) it cannot, and
    the leakage check says which is which."""
    repeated_frame().to_csv(tmp_path / "t.csv", index=False)
    common = (
        "cv=kfold",
        "cv.folds=3",
        "model.hidden=[256]",
        "trainer.epochs=150",
        "trainer.patience=null",
        "data.val_size=0.1",
    )
    scores = {}
    for policy in ("keep", "group"):
        cfg = csv_cfg(compose_cfg, tmp_path / "t.csv", *common, f"data.duplicates={policy}")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pricenet"):
            metrics, _ = run(cfg, tmp_path / policy)
        scores[policy] = metrics
        warned = [r for r in caplog.records if "held-out rows" in r.getMessage()]
        assert bool(warned) == (policy == "keep")
    keep, group = scores["keep"], scores["group"]
    assert keep["cv"]["acc"]["mean"] > 0.6 > 0.4 > group["cv"]["acc"]["mean"]
    assert keep["leakage"]["seen_in_training"] > 200 and keep["cv"]["leakage"] > 200
    assert group["leakage"]["seen_in_training"] == 0 == group["cv"]["leakage"]
    assert keep["duplicates"]["rows"] == group["duplicates"]["rows"] == 240
    assert [m["leaked_test_rows"] for m in group["members"]] == [0, 0, 0]
