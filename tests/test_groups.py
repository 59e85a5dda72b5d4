"""Groups (data.group): every group's rows on one side of every split; not a feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from pricenet.checkpoints.checkpoint import load_checkpoint
from pricenet.errors import DataError
from pricenet.inference.predictor import Predictor
from pricenet.run.fits import load_data, plan_for
from pricenet.run.pipeline import run
from pricenet.run.plan import split_groups
from pricenet.run.recipe import Recipe
from pricenet.tables.splits import stratified_split

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")


def grouped_frame(rows: int = 240, size: int = 4, seed: int = 0) -> pd.DataFrame:
    """Numeric features, a 3-class label, and a ``patient`` column of ``size`` rows each."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 5)).round(3), columns=[f"x{i}" for i in range(5)])
    klass = (frame["x0"] > 0).to_numpy(dtype=int) + (frame["x1"] > 0.5).to_numpy(dtype=int)
    frame["target"] = np.array(["a", "b", "c"])[klass]
    frame.insert(0, "patient", [f"p{i // size}" for i in range(rows)])
    return frame


def csv_cfg(compose_cfg, path, *overrides: str):
    return compose_cfg(
        "data=csv",
        f"data.path={path}",
        "data.label=target",
        "data.group=patient",
        "trainer.epochs=2",
        *LEAN,
        *overrides,
        shrink=False,
    )


def sides(member, groups: np.ndarray) -> list[set]:
    return [set(groups[member.train]), set(groups[member.val]), set(groups[member.test])]


def assert_no_group_straddles(plan, groups: np.ndarray) -> None:
    for member in plan:
        train, val, test = sides(member, groups)
        assert not train & val and not train & test and not val & test, member.name
        assert val, member.name  # the inner validation split holds whole groups too


def test_kfold_keeps_every_group_in_one_fold_per_repeat_and_out_of_its_inner_split(
    compose_cfg, tmp_path
):
    grouped_frame().to_csv(tmp_path / "t.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "t.csv", "cv=kfold", "cv.repeats=2")
    table = load_data(Recipe.of(cfg).data)
    assert "patient" not in table.frame.columns and "patient" not in table.schema.feature_names
    plan = plan_for(Recipe.of(cfg), table)
    groups = table.groups
    assert len(plan) == 10
    for repeat in (0, 1):
        tests = [m.test for m in plan if m.repeat == repeat]
        assert sorted(np.concatenate(tests)) == list(range(240))  # every row held out once
        fold_of = {g: {i for i, t in enumerate(tests) if g in set(groups[t])} for g in groups}
        assert all(len(folds) == 1 for folds in fold_of.values())  # each group in one fold
    assert_no_group_straddles(plan, groups)
    assert set(plan[0].test) != set(plan[5].test)  # repeats reshuffle


def test_the_single_split_and_the_refit_keep_groups_whole(compose_cfg, tmp_path):
    from pricenet.run.plan import refit_member

    grouped_frame().to_csv(tmp_path / "t.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "t.csv")
    table = load_data(Recipe.of(cfg).data)
    (member,) = plan_for(Recipe.of(cfg), table)
    assert_no_group_straddles([member], table.groups)
    assert len(member.train) + len(member.val) + len(member.test) == 240
    assert 0.1 < len(member.test) / 240 < 0.2  # 1/7 of the groups: data.test_size=0.15
    codes = split_groups(table, "patient")
    refit = refit_member(table.labels, table.schema, 0.15, 0, table.source, groups=codes)
    assert_no_group_straddles([refit], table.groups)
    assert len(refit.test) == 0 and len(refit.train) + len(refit.val) == 240


def test_without_the_group_the_split_would_straddle_groups(compose_cfg, tmp_path):
    """The payload: the same table split by rows puts some patient on both sides."""
    frame = grouped_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = compose_cfg(
        "data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=target", *LEAN, shrink=False
    )
    table = load_data(Recipe.of(cfg).data)  # patient is left out as an unknown text column here
    (member,) = plan_for(Recipe.of(cfg), table)
    patients = frame["patient"].to_numpy()
    assert set(patients[member.train]) & set(patients[member.test])


def test_the_group_column_is_no_feature_and_predict_does_not_need_it(compose_cfg, tmp_path):
    frame = grouped_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    metrics, artifacts = run(csv_cfg(compose_cfg, tmp_path / "t.csv"), tmp_path / "run")
    schema = load_checkpoint(artifacts["best.pt"])["schema"]
    assert [f["name"] for f in schema["features"]] == [f"x{i}" for i in range(5)]
    predicted = Predictor.from_checkpoint(artifacts["best.pt"]).predict(
        frame.drop(columns=["patient", "target"])
    )
    assert len(predicted) == 240
    assert metrics["leakage"]["seen_in_training"] == 0
    assert metrics["duplicates"] == {
        "policy": "group",
        "rows": 0,
        "share": 0.0,
        "sets": 0,
        "conflicting_sets": 0,
        "dropped": 0,
    }


def test_groups_and_duplicate_sets_are_joined(compose_cfg, tmp_path):
    """Row 0 (patient p0) repeats row 100's features (patient p25): p0 and p25 are one group."""
    frame = grouped_frame()
    frame.loc[0, [f"x{i}" for i in range(5)]] = frame.loc[100, [f"x{i}" for i in range(5)]]
    frame.loc[0, "target"] = frame.loc[100, "target"]
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "t.csv", "cv=kfold", "cv.repeats=3")
    table = load_data(Recipe.of(cfg).data)
    codes = split_groups(table, "patient")
    assert codes[0] == codes[100] == codes[3] == codes[101]
    for member in plan_for(Recipe.of(cfg), table):
        joined = {0, 1, 2, 3, 100, 101, 102, 103}
        assert joined <= set(member.test) or not joined & set(member.test)


@pytest.mark.slow
def test_a_missing_group_column_is_one_error_line(tmp_path):
    grouped_frame().to_csv(tmp_path / "t.csv", index=False)
    result = run_cli(
        "data=csv",
        f"data.path={tmp_path / 't.csv'}",
        "data.label=target",
        "data.group=visit",
        *LEAN,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 't.csv'}: column 'visit', line 1: missing from the header"
    ]


@pytest.mark.slow
def test_a_group_holding_every_row_of_a_class_is_one_error_line(tmp_path):
    frame = grouped_frame()
    frame.loc[frame["target"] == "c", "patient"] = "p_all_c"
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = run_cli(
        "data=csv",
        f"data.path={tmp_path / 't.csv'}",
        "data.label=target",
        "data.group=patient",
        *LEAN,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    count = int((frame["target"] == "c").sum())
    assert line == (
        f"error: {tmp_path / 't.csv'}: column 'patient' (data.group): group 'p_all_c' holds "
        f"every row of class 'c' ({count} rows) in column 'target'; no split can both train "
        "on that class and hold it out"
    )


def test_group_errors_of_the_api(compose_cfg, tmp_path):
    with pytest.raises(DataError, match=r"column 'patient' \(data.group\): not in the table"):
        load_data(Recipe.of(compose_cfg("data.group=patient")).data)
    frame = grouped_frame()
    frame.loc[5, "patient"] = " "
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"column 'patient' \(data.group\), line 7: empty"):
        load_data(Recipe.of(csv_cfg(compose_cfg, tmp_path / "t.csv")).data)
    grouped_frame().to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(DataError, match=r"column 'target' \(data.group\) is the schema's label"):
        load_data(Recipe.of(csv_cfg(compose_cfg, tmp_path / "u.csv", "data.group=target")).data)


def test_rows_alone_and_groups_are_dealt_together_stratified_and_whole():
    """Most rows alone, some in pairs or fours: every group whole in one fold, and the folds
    keep the class shares and sizes within a few rows."""
    from pricenet.tables import stratified_kfold

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 1000)
    groups = np.arange(1000)
    groups[:100] = groups[100:200]  # 100 pairs
    groups[200:240] = np.repeat(np.arange(10), 4)  # 10 fours
    folds = stratified_kfold(labels, 5, 2, seed=1, groups=groups)
    for repeat in (0, 1):
        fold_of = np.empty(1000, dtype=int)
        for index, (train, test) in enumerate(folds[repeat * 5 : repeat * 5 + 5]):
            fold_of[test] = index
            assert len(train) + len(test) == 1000 and 190 <= len(test) <= 210
            shares = np.bincount(labels[test], minlength=3) / len(test)
            assert np.abs(shares - np.bincount(labels) / 1000).max() < 0.03
        for group in np.unique(groups):
            assert len(set(fold_of[groups == group])) == 1


def test_a_small_grouped_part_is_dealt_whole_or_refused_in_one_line():
    """8 pairs among single rows, 4 rows of each class in pairs: too few for StratifiedGroupKFold
    on the pairs alone (it raised ValueError), so all rows are dealt together; too few groups
    for the folds is one line."""
    labels = np.repeat(np.arange(4), 40)
    groups = np.arange(160)
    groups[1::20] = groups[0::20]  # 8 pairs, 4 rows of each class: fewer than the 7 folds
    train, val, test = stratified_split(labels, 0.15, 0.15, seed=0, groups=groups)
    for part in (train, val, test):
        for pair in groups[0::20]:
            members = np.flatnonzero(groups == pair)
            assert np.isin(members, part).all() or not np.isin(members, part).any()
    assert len(train) + len(val) + len(test) == 160
    with pytest.raises(
        DataError, match=r"tiny: cannot deal 7 folds of whole groups \(n_splits=7 cannot be greater"
    ):
        stratified_split(
            np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1]),
            0.15,
            0.15,
            0,
            groups=np.array([0, 0, 1, 1, 2, 3, 4, 5, 6, 7]),
            source="tiny",
        )
