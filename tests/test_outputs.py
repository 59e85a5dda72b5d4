"""Outputs are regular files or new paths, written whole or not at all, in one error line.

And what goes into them survives: ids pass through predict unchanged, inputs that would
overflow the model never come out as NaN with label 0, text cells are safe to open in a
spreadsheet. Each regression test first shows what its payload did the old way.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from pricenet.atomic import WriteError, atomic_write_bytes, atomic_write_text
from pricenet.checkpoints.checkpoint import save_checkpoint
from pricenet.config.cli import check_output_path
from pricenet.errors import ConfigError, DataError
from pricenet.inference.predictor import Predictor
from pricenet.predict import main
from pricenet.run.pipeline import run
from pricenet.tables import MOBILE_PRICE, make_synthetic
from pricenet.tables.cells import escape_formula, escape_formulas_in

LABEL = MOBILE_PRICE.label
IDS = ["a-7", '=HYPERLINK("http://x","y")', "-1.5", "@SUM(A1)", "0042", "+cmd|' /C calc'!A0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A run trained on a CSV without an id column (so its inferred schema names no id), and
    rows to predict that carry one."""
    folder = tmp_path_factory.mktemp("outputs")
    table = make_synthetic(300, seed=3).to_frame()
    table.drop(columns="id", errors="ignore").to_csv(folder / "train.csv", index=False)
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data=csv",
                f"data.path={folder / 'train.csv'}",
                "trainer.epochs=2",
                "trainer.device=cpu",
                "model.hidden=[16]",
                "report.plots=false",
                "report.tensorboard=false",
                "report.progress=none",
            ],
        )
    GlobalHydra.instance().clear()
    run(cfg, folder / "run")
    rows = table.drop(columns=[LABEL, "id"], errors="ignore").head(len(IDS)).copy()
    rows.insert(0, "id", IDS)
    return folder / "run", rows


def _exit_2(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# ------------------------------------------------------------ outputs are regular files


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe")
    return folder / "pipe"


def _socket(folder: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(folder)  # a relative name: AF_UNIX paths are limited to ~100 bytes
    try:
        server.bind("sock")
    finally:
        os.chdir(cwd)
    server.close()
    return folder / "sock"


@pytest.mark.parametrize(("make", "kind"), [(_fifo, "a FIFO"), (_socket, "a socket")])
def test_a_fifo_or_socket_is_never_replaced_even_with_overwrite(tmp_path, make, kind):
    # the old way: an atomic replace turns the special file into a regular one
    (tmp_path / "old").mkdir()
    doomed = make(tmp_path / "old")
    plain = tmp_path / "plain"
    plain.write_text("x")
    os.replace(plain, doomed)
    assert stat.S_ISREG(os.stat(doomed).st_mode), "the payload should have had an effect"

    target = make(tmp_path)
    with pytest.raises(ConfigError, match=f"output={target}: is {kind}, not a regular file"):
        check_output_path(target, overwrite=True)
    with pytest.raises(WriteError, match="not a regular file"):  # every writer, not only CLIs
        atomic_write_text(target, "replaced")
    mode = os.stat(target).st_mode
    assert stat.S_ISFIFO(mode) if kind == "a FIFO" else stat.S_ISSOCK(mode), kind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["old", target.name]), (
        "a temporary file was left"
    )


def test_dev_null_is_refused_without_writing_anything(tmp_path, monkeypatch):
    before = os.stat("/dev/null")
    (tmp_path / "null.csv").symlink_to("/dev/null")
    probes: list[Any] = []

    def probe(*args: Any, **kwargs: Any) -> Any:
        probes.append(args)
        raise AssertionError("nothing may be created beside /dev/null")

    monkeypatch.setattr(tempfile, "mkstemp", probe)
    with pytest.raises(ConfigError, match="output=/dev/null: is a character device"):
        check_output_path("/dev/null", overwrite=True)
    with pytest.raises(ConfigError, match="null.csv: is a character device"):  # through a link
        check_output_path(tmp_path / "null.csv", overwrite=True)
    with pytest.raises(WriteError, match="/dev/null: is not a regular file"):
        atomic_write_bytes(Path("/dev/null"), b"x")
    assert probes == [], "a probe or temporary file was created"
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (
        before.st_ino,
        before.st_rdev,
    )


def test_predict_refuses_to_overwrite_its_own_input_or_checkpoint(trained, tmp_path, capsys):
    run_dir, rows = trained
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    original, checkpoint = data.read_bytes(), (run_dir / "best.pt").read_bytes()
    # the old check passed these: nothing told it what the command reads
    assert check_output_path(data, overwrite=True) == data
    (tmp_path / "link.csv").symlink_to(data)
    os.link(data, tmp_path / "hard.csv")

    base = [f"checkpoint={run_dir}", f"input={data}", "overwrite=true"]
    detour = tmp_path / ".." / tmp_path.name / "rows.csv"
    for output in (data, tmp_path / "link.csv", tmp_path / "hard.csv", detour):
        err = _exit_2(capsys, [*base, f"output={output}"])
        assert f"is also input={data}" in err and "even with overwrite=true" in err
    err = _exit_2(capsys, [*base, f"output={run_dir / 'best.pt'}"])
    assert "is also checkpoint=" in err
    assert data.read_bytes() == original
    assert (run_dir / "best.pt").read_bytes() == checkpoint


def test_export_refuses_to_overwrite_its_own_checkpoint(trained, capsys):
    from pricenet import export

    run_dir, _ = trained
    before = (run_dir / "best.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        export.main(
            [f"checkpoint={run_dir}", f"output={run_dir / 'best.pt'}", "format=torchscript"]
            + ["overwrite=true"]
        )
    assert exit_info.value.code == 2
    assert "is also checkpoint=" in capsys.readouterr().err
    assert (run_dir / "best.pt").read_bytes() == before


# ------------------------------------------------------------ write errors are one line


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_write_is_one_error_naming_the_path_and_keeps_the_old_file(
    tmp_path, monkeypatch, code
):
    target = tmp_path / "metrics.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", _raise(code))
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, "new")
    assert str(info.value) == (
        f"{target}: cannot write ({os.strerror(code)}); the old file is unchanged"
    )
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "a temporary file was left"


def test_a_full_disk_inside_torchs_zip_writer_is_one_error(tmp_path, monkeypatch):
    target = tmp_path / "best.pt"
    save_checkpoint(target, {"w": torch.zeros(4)})
    before = target.read_bytes()
    real_fdopen = os.fdopen

    class Full:
        """A file that takes 100 bytes, then reports a full disk."""

        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(WriteError, match=r"best.pt: cannot write \(No space left on device\)"):
        save_checkpoint(target, {"w": torch.zeros(10_000)})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_training_on_a_full_disk_fails_in_one_line_naming_the_checkpoint(
    tmp_path, monkeypatch, capsys
):
    import json

    import pricenet.checkpoints.checkpoint
    from pricenet.errors import exit_on_user_error

    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["trainer.epochs=1", "data.n_rows=120", "trainer.device=cpu"]
            + ["report.plots=false", "report.tensorboard=false", "report.progress=none"],
        )
    GlobalHydra.instance().clear()

    def full(body, handle):  # torch's zip writer meets a full disk half way
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pricenet.checkpoints.checkpoint.torch, "save", full)
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(run)(cfg, tmp_path / "run")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path / 'run' / 'last.pt'}: cannot write (No space left on device); "
        "nothing was written\n"
    )
    assert not any(p.name.endswith((".pt", ".tmp")) for p in (tmp_path / "run").iterdir())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_predict_on_a_full_disk_prints_one_line_and_keeps_the_old_output(
    trained, tmp_path, monkeypatch, capsys
):
    run_dir, rows = trained
    rows.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "pred.csv").write_text("old\n")
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    err = _exit_2(
        capsys,
        [f"checkpoint={run_dir}", f"input={tmp_path / 'rows.csv'}"]
        + [f"output={tmp_path / 'pred.csv'}", "overwrite=true"],
    )
    assert err == (
        f"error: {tmp_path / 'pred.csv'}: cannot write (No space left on device); "
        "the old file is unchanged\n"
    )
    assert (tmp_path / "pred.csv").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv", "rows.csv"]


def test_metrics_csv_on_a_full_disk_is_one_error():
    from types import SimpleNamespace

    from pricenet.engine.loop import CURVES
    from pricenet.engine.reporting import CsvLogger

    # /dev/full: every write fails with ENOSPC, as on a full disk
    state = SimpleNamespace(epoch=1, history={k: [0.5] for k in CURVES}, last=lambda k: 0.5)
    logger = CsvLogger("/dev/full")
    for step in (logger.on_fit_start, logger.on_epoch_end):
        with pytest.raises(WriteError, match=r"^/dev/full: cannot write \(No space left"):
            step(SimpleNamespace(state=state))


# ------------------------------------------------------------ ids survive


def test_a_column_named_id_passes_through_a_schema_without_one(trained, tmp_path):
    run_dir, rows = trained
    predictor = Predictor.from_checkpoint(run_dir)
    assert predictor.schema.id is None  # the old code kept only the schema's id: none here
    rows.to_csv(tmp_path / "rows.csv", index=False)
    main(
        [f"checkpoint={run_dir}", f"input={tmp_path / 'rows.csv'}"]
        + [f"output={tmp_path / 'pred.csv'}", "escape_formulas=false"]
    )
    written = pd.read_csv(tmp_path / "pred.csv", dtype={"id": str}, keep_default_na=False)
    assert written["id"].tolist() == IDS  # not 1..n

    api = predictor.predict(rows.set_index(pd.Index(range(50, 50 + len(rows)))))
    assert api["id"].tolist() == IDS and api.index.tolist() == list(range(50, 56))


# ------------------------------------------------------------ overflow


def _huge(rows: pd.DataFrame, value: float) -> pd.DataFrame:
    out = rows.drop(columns="id").astype({"clock_speed": float, "m_dep": float})
    out.loc[out.index[0], "clock_speed"] = value
    out.loc[out.index[1], "m_dep"] = -value
    return out


def test_inputs_that_overflow_once_scaled_are_refused_or_clamped(trained, caplog):
    run_dir, rows = trained
    predictor = Predictor.from_checkpoint(run_dir)
    huge = _huge(rows, 3e38)
    # the old way: the validator accepts 3e38 (finite float32), scaling makes it inf, the
    # network NaN, and NaN decodes as label 0
    prep = predictor.preprocessors[0]
    x = torch.from_numpy(huge[list(prep.numeric_names)].to_numpy(np.float32))
    x = (x - torch.from_numpy(prep.numeric_mean)) / torch.from_numpy(prep.numeric_std)
    outputs = predictor.head.combine(predictor.network(x.unsqueeze(0)))
    assert torch.isnan(predictor.head.probabilities(outputs)[:2]).all()

    with pytest.raises(DataError, match=r"column 'clock_speed', row 0: '3e\+38' is more than"):
        predictor.table(huge, ranges="error")
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        result = predictor.predict(huge)
    assert "2 value(s) more than 1e+06 training standard deviations" in caplog.text
    assert "column 'clock_speed', row 0" in caplog.text
    probs = result[[c for c in result.columns if c.startswith("prob_")]].to_numpy()
    assert np.isfinite(probs).all() and probs.sum(axis=1) == pytest.approx(1, abs=1e-5)
    assert (probs.argmax(axis=1) == result[LABEL].to_numpy()).all()
    # clamped: as if the value were at the limit, which a finite far value also reaches
    assert result.iloc[:2].equals(predictor.predict(_huge(rows, 1e30)).iloc[:2])


def test_overflow_through_the_command_names_column_and_row(trained, tmp_path, capsys):
    run_dir, rows = trained
    _huge(rows, -3e38).to_csv(tmp_path / "huge.csv", index=False)
    args = [f"checkpoint={run_dir}", f"input={tmp_path / 'huge.csv'}"]
    err = _exit_2(capsys, [*args, f"output={tmp_path / 'p.csv'}", "ranges=error"])
    assert "huge.csv: column 'clock_speed', data row 1: '-3e+38' is more than 1e+06" in err
    assert not (tmp_path / "p.csv").exists()
    main([*args, f"output={tmp_path / 'p.csv'}"])
    assert np.isfinite(pd.read_csv(tmp_path / "p.csv").filter(like="prob_").to_numpy()).all()


def test_outputs_that_are_not_finite_are_refused(trained):
    run_dir, rows = trained
    predictor = Predictor.from_checkpoint(run_dir)
    with torch.no_grad():
        for parameter in predictor.network.parameters():
            parameter.fill_(1e30)  # in range for float32, but the arithmetic overflows
    with pytest.raises(DataError, match=r"data row 1 \(id 'a-7'\): the model's outputs are not"):
        predictor.predict(rows)


def test_the_preprocessor_refuses_values_that_overflow_once_standardized(trained):
    prep = Predictor.from_checkpoint(trained[0]).preprocessors[0]
    frame = pd.DataFrame({name: [1.0, 1.0] for name in prep.numeric_names})
    frame.loc[1, prep.numeric_names[2]] = -3.4e38
    with pytest.raises(DataError, match=f"column '{prep.numeric_names[2]}', row 2: -3.4e\\+38"):
        prep.transform(frame)


# ------------------------------------------------------------ the Predictor's inputs


def test_the_predictor_takes_one_row_as_a_series_or_dict(trained):
    run_dir, rows = trained
    predictor = Predictor.from_checkpoint(run_dir)
    features = rows.drop(columns="id")
    expected = predictor.predict_proba(features.iloc[[2]])
    assert predictor.predict_proba(features.iloc[2]) == pytest.approx(expected)
    assert predictor.predict_proba(features.iloc[2].to_dict()) == pytest.approx(expected)
    assert predictor.predict_proba(features.to_dict("list")) == pytest.approx(
        predictor.predict_proba(features)
    )


@pytest.mark.parametrize(
    "rows", [None, np.zeros((2, 20)), [1, 2, 3], "ram=1"], ids=["None", "array", "list", "str"]
)
def test_the_predictor_refuses_what_is_not_a_table_in_one_line(trained, rows):
    predictor = Predictor.from_checkpoint(trained[0])
    for method in (predictor.predict, predictor.predict_proba):
        with pytest.raises(DataError, match="expected a pandas DataFrame .*rows need their"):
            method(rows)


def test_a_nullable_integer_column_with_na_is_a_missing_value(trained):
    run_dir, rows = trained
    frame = rows.drop(columns="id").astype({"ram": "Int64"})
    predictor = Predictor.from_checkpoint(run_dir)
    assert len(predictor.predict(frame)) == len(frame)  # Int64 without gaps is fine
    frame.loc[frame.index[3], "ram"] = pd.NA
    with pytest.raises(DataError, match=r"column 'ram', row 3: <NA> is a missing value"):
        predictor.predict(frame)


# ------------------------------------------------------------ spreadsheet-safe CSV


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-1.5", "-1.5"),  # numbers are never altered
        ("+3", "+3"),
        ("1e-3", "1e-3"),
        ("a=b", "a=b"),
        ("", ""),
        (-1.5, -1.5),
        (None, None),
    ],
)
def test_formula_escaping_follows_owasp(value, written):
    assert escape_formula(value) == written


def test_text_columns_are_escaped_and_numbers_never(tmp_path):
    frame = pd.DataFrame(
        {"id": ["=x", "7"], "label": ["@y", "ok"], "prob": [-1.5, 0.25], "n": [-3, 4]}
    )
    escaped = escape_formulas_in(frame)
    assert escaped["id"].tolist() == ["'=x", "7"] and escaped["label"].tolist() == ["'@y", "ok"]
    assert escaped[["prob", "n"]].equals(frame[["prob", "n"]])
    assert frame["id"].tolist() == ["=x", "7"]  # the caller's frame is not changed
    clean = frame.assign(id=["a", "b"], label=["c", "d"])
    assert escape_formulas_in(clean) is clean


def test_predict_escapes_formulas_unless_told_not_to(trained, tmp_path):
    run_dir, rows = trained
    rows.to_csv(tmp_path / "rows.csv", index=False)
    args = [f"checkpoint={run_dir}", f"input={tmp_path / 'rows.csv'}"]
    read = lambda name: pd.read_csv(tmp_path / name, dtype={"id": str}, keep_default_na=False)  # noqa: E731
    main([*args, f"output={tmp_path / 'raw.csv'}", "escape_formulas=false"])
    assert read("raw.csv")["id"].tolist() == IDS  # the old output: formulas as written
    main([*args, f"output={tmp_path / 'safe.csv'}"])
    safe = read("safe.csv")
    assert safe["id"].tolist() == [
        "a-7",
        '\'=HYPERLINK("http://x","y")',
        "-1.5",
        "'@SUM(A1)",
        "0042",
        "'+cmd|' /C calc'!A0",
    ]
    assert safe.drop(columns="id").equals(read("raw.csv").drop(columns="id"))


# ------------------------------------------------------------ no huge strings


def test_huge_names_and_values_give_short_messages(trained, caplog):
    predictor = Predictor.from_checkpoint(trained[0])
    rows = trained[1].drop(columns="id")
    wide = pd.concat(
        [rows, pd.DataFrame({f"extra{'x' * 10_000}{i}": 0 for i in range(500)}, index=rows.index)],
        axis=1,
    )
    with caplog.at_level(logging.WARNING, logger="pricenet.tables"):
        predictor.predict(wide)
    assert "and 490 more" in caplog.text and len(caplog.text) < 2_000
    bad = rows.astype({"ram": object})
    bad.index = ["r" * 10_000_000, *bad.index[1:]]
    bad.iloc[0, bad.columns.get_loc("ram")] = "x" * 10_000_000
    with pytest.raises(DataError) as info:
        predictor.predict(bad)
    assert len(str(info.value)) < 300 and "column 'ram'" in str(info.value)
