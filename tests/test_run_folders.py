"""Run folders, outputs and metrics that do not lie (issue 13, items 4, 5, 6 and 8)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from pricenet.config.cli import check_output_path
from pricenet.errors import CheckpointError, ConfigError, DataError
from pricenet.run.folders import MARKER, claim_run_dir, release_run_dir
from pricenet.run.pipeline import run
from pricenet.tables import make_synthetic

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
TINY = ("trainer.epochs=2", "data.n_rows=120", *LEAN)
CSV_TINY = ("trainer.epochs=2", *LEAN)


def strict_json(path) -> dict:
    """metrics.json parsed with NaN/Infinity refused, as a strict JSON reader would."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def snapshot(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_second_claim_of_the_same_folder_is_refused(tmp_path):
    claim_run_dir(tmp_path / "run")
    assert "pid" in (tmp_path / "run" / MARKER).read_text()
    with pytest.raises(ConfigError, match="is being used by another run"):
        claim_run_dir(tmp_path / "run")


def test_an_unwritable_run_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"/proc/nonexistent/run: cannot create the run folder"):
        claim_run_dir("/proc/nonexistent/run")


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"hydra.run.dir=.*afile: is not a folder"):
        claim_run_dir(tmp_path / "afile")
    with pytest.raises(ConfigError, match=r"afile/run: cannot create the run folder \(Not a dir"):
        claim_run_dir(tmp_path / "afile" / "run")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_folder_without_last_pt_is_never_offered_to_resume(tmp_path):
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "metrics.json").write_text('{"status": "failed"}')
    with pytest.raises(ConfigError) as refused:
        claim_run_dir(tmp_path / "failed")
    assert "holds no last.pt to resume from" in str(refused.value)
    assert "trainer.resume" not in str(refused.value)
    (tmp_path / "failed" / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="to continue that run: trainer.resume="):
        claim_run_dir(tmp_path / "failed")


def test_a_claim_whose_process_ended_says_so(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / MARKER).write_text(
        f"pid {dead.stdout.strip()} on {socket.gethostname()} since 2026-01-01T00:00:00\n"
    )
    with pytest.raises(ConfigError, match="was claimed by a run that ended before training"):
        claim_run_dir(tmp_path / "run")
    claim_run_dir(tmp_path / "live")  # this process: alive
    with pytest.raises(ConfigError, match="is being used by another run .pid"):
        claim_run_dir(tmp_path / "live")


def test_releasing_a_claim_leaves_the_folder_as_it_was(tmp_path):
    for name, created in (("new", True), ("kept", False)):
        folder = claim_run_dir(tmp_path / name)
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text("[]")
        (folder / "train.log").write_text("log")
        release_run_dir(folder, created)
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "kept").iterdir()) == []
    folder = claim_run_dir(tmp_path / "other")
    (folder / "notes.txt").write_text("mine")  # not written by Hydra: everything stays
    release_run_dir(folder, True)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_cli_run_refused_after_its_claim_releases_the_folder(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    args = ("hydra.run.dir=outputs/fixed", "data=csv", *CSV_TINY)
    refused = run_cli(*args, f"data.path={tmp_path / 'bad.csv'}", cwd=tmp_path)
    assert refused.returncode == 2 and "missing from the header" in refused.stderr
    assert refused.stderr.count("error:") == 1
    assert not (tmp_path / "outputs" / "fixed").exists()  # was: a claimed folder, .hydra/

    make_synthetic(120, seed=0).to_frame().to_csv(tmp_path / "good.csv", index=False)
    rerun = run_cli(*args, f"data.path={tmp_path / 'good.csv'}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert strict_json(tmp_path / "outputs" / "fixed" / "metrics.json")["status"] == "done"


@pytest.mark.slow
def test_a_refused_cli_run_changes_nothing_in_the_folder(tmp_path):
    args = ("hydra.run.dir=outputs/fixed", *TINY)
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(tmp_path / "outputs" / "fixed")
    assert ".hydra/overrides.yaml" in before

    second = run_cli(*args, "optim=sgd", cwd=tmp_path)
    assert second.returncode == 2
    assert second.stderr.count("error:") == 1 and "already holds an earlier run" in second.stderr
    assert snapshot(tmp_path / "outputs" / "fixed") == before


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_one_is_refused(tmp_path):
    env = {**os.environ, "PRICENET_ROOT": str(tmp_path)}
    command = [sys.executable, "-m", "pricenet.train", "hydra.run.dir=outputs/same", *TINY]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.05)
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    first_err = first.communicate(timeout=300)[1]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], (first_err[-1500:], second.stderr[-1500:])
    refused = second.stderr if second.returncode == 2 else first_err
    assert "error:" in refused and ("another run" in refused or "earlier run" in refused)
    lines = (tmp_path / "outputs" / "same" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3  # a header and 2 epochs: one run's rows, not two interleaved
    assert strict_json(tmp_path / "outputs" / "same" / "metrics.json")["status"] == "done"


@pytest.mark.slow
def test_a_config_error_leaves_no_run_folder(tmp_path):
    result = run_cli("optim.lr=-1", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and "optim.lr=-1" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_no_test_split_gives_null_test_figures_and_strict_json(compose_cfg, tmp_path):
    cfg = compose_cfg("data.test_size=0", *TINY)
    metrics, artifacts = run(cfg, tmp_path / "run")
    saved = strict_json(artifacts["metrics.json"])
    assert saved["status"] == "done"
    assert saved["test_acc"] is None and saved["test_macro_f1"] is None and saved["test"] is None
    assert metrics["val_acc"] == saved["val_acc"] > 0.25


def test_nan_in_metrics_is_written_as_null(compose_cfg, tmp_path):
    cfg = compose_cfg("optim=sgd", "optim.lr=1e6", "trainer.epochs=3", "data.n_rows=120", *LEAN)
    with pytest.raises(Exception, match="diverged"):
        run(cfg, tmp_path / "run")
    saved = strict_json(tmp_path / "run" / "metrics.json")
    assert saved["status"] == "failed" and "diverged at epoch" in saved["error"]


def test_bad_data_is_refused_before_a_run_folder_exists(compose_cfg, tmp_path):
    (tmp_path / "bad.csv").write_text("ram,price_range\n1,0\n")
    cfg = compose_cfg("data=csv", f"data.path={tmp_path / 'bad.csv'}", *CSV_TINY)
    with pytest.raises(DataError, match="bad.csv: column 'price_range': every row has the value 0"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_failing_after_its_folder_was_claimed_is_marked_failed(compose_cfg, tmp_path):
    cfg = compose_cfg("data.n_rows=8", "trainer.epochs=1", *LEAN)  # 2 rows a class: no split
    with pytest.raises(DataError, match="too few rows to split stratified"):
        run(cfg, tmp_path / "run")
    saved = strict_json(tmp_path / "run" / "metrics.json")
    assert saved["status"] == "failed" and "too few rows to split" in saved["error"]


def test_a_training_split_missing_a_class_is_warned_about(compose_cfg, tmp_path, caplog):
    rows = [
        "battery_power,blue,clock_speed,dual_sim,fc,four_g,int_memory,m_dep,mobile_wt,"
        "n_cores,pc,px_height,px_width,ram,sc_h,sc_w,talk_time,three_g,touch_screen,wifi,"
        "price_range"
    ]
    for i in range(60):
        label = (0, 1, 3)[i % 3]
        rows.append(
            f"{600 + i},0,1.0,0,1,0,8,0.5,100,2,3,{100 + i},600,{300 + 1000 * label},"
            f"10,5,10,0,0,0,{label}"
        )
    (tmp_path / "three.csv").write_text("\n".join(rows) + "\n")
    cfg = compose_cfg(
        "data=csv", f"data.path={tmp_path / 'three.csv'}", "data/schema=mobile_price", *CSV_TINY
    )
    run(cfg, tmp_path / "run")
    assert "no example of class(es) 2" in caplog.text


def test_resume_with_no_epochs_left_is_refused(compose_cfg, tmp_path):
    run(compose_cfg(*TINY), tmp_path / "first")
    again = compose_cfg(*TINY, f"trainer.resume={tmp_path / 'first'}")
    with pytest.raises(ConfigError, match="already trained 2 epochs and trainer.epochs=2"):
        run(again, tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_resume_onto_changed_data_is_refused(compose_cfg, tmp_path):
    from pricenet.tables import make_synthetic

    csv = tmp_path / "train.csv"
    make_synthetic(120, seed=1).to_frame().to_csv(csv, index=False)
    base = ("data=csv", f"data.path={csv}", *LEAN)
    run(compose_cfg(*base, "trainer.epochs=2"), tmp_path / "first")
    make_synthetic(120, seed=2).to_frame().to_csv(csv, index=False)
    again = compose_cfg(*base, "trainer.epochs=4", f"trainer.resume={tmp_path / 'first'}")
    with pytest.raises(CheckpointError, match="trained on other data"):
        run(again, tmp_path / "second")


def test_written_files_honour_the_umask(compose_cfg, tmp_path):
    old = os.umask(0o022)
    try:
        _, artifacts = run(compose_cfg(*TINY), tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("metrics.json", "best.pt", "last.pt", "config.yaml"):
        assert stat.S_IMODE(artifacts[name].stat().st_mode) == 0o644, name


@pytest.mark.parametrize(
    ("target", "overwrite", "message"),
    [
        ("/proc/x/out.csv", False, "folder /proc/x does not exist"),
        ("{tmp}", True, "is a directory"),
        ("{tmp}/exists.csv", False, "already exists; pass overwrite=true"),
        ("{tmp}/missing/out.csv", False, "does not exist"),
    ],
)
def test_output_paths_are_checked_before_the_work(tmp_path, target, overwrite, message):
    (tmp_path / "exists.csv").write_text("x\n")
    with pytest.raises(ConfigError, match=message):
        check_output_path(target.format(tmp=tmp_path), overwrite)


def test_an_unwritable_output_folder_is_refused(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere; a read-only mount stands in
        path = "/proc/self/out.csv"
        message = "cannot write in /proc/self"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        path, message = str(tmp_path / "ro" / "out.csv"), "cannot write in"
    with pytest.raises(ConfigError, match=message):
        check_output_path(path)
