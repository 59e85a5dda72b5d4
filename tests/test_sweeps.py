"""Sweeps: the leaderboard, the table cache, the grids, and real multiruns on every launcher."""

from __future__ import annotations

import csv
import itertools
import json
import os
import stat
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from conftest import SHRINK, run_cli
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pricenet.config.config import validate
from pricenet.config.seed import set_threads
from pricenet.errors import ConfigError
from pricenet.sweep import main, write_leaderboard

# Small, fast, and quiet: what every subprocess sweep here runs on.
SMALL = [*SHRINK, "report.plots=false", "report.tensorboard=false"]


def read_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "leaderboard.csv").open() as handle:
        return list(csv.DictReader(handle))


def only_sweep_dir(root: Path, kind: str = "multirun") -> Path:
    (sweep_dir,) = (root / "outputs" / kind).iterdir()
    return sweep_dir


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml"))


def assert_ranked(rows: list[dict[str, str]]) -> None:
    """Done rows by val_acc (then val_loss) best first, then pruned, failed last, ranks 1..n."""
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    statuses = [r["status"] for r in rows]
    assert statuses == sorted(statuses, key=["done", "pruned", "failed"].index)
    done = [(-float(r["val_acc"]), float(r["val_loss"])) for r in rows if r["status"] == "done"]
    assert done == sorted(done)


# --------------------------------------------------------------------------- fast unit tests


def fake_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
        if metrics["status"] == "done":
            (job / "run.json").write_text(json.dumps({"wall_time_s": 1.5}))
    return job


def done(val_acc: float, val_loss: float, test_acc: float) -> dict:
    return {
        "status": "done",
        "val_acc": val_acc,
        "val_loss": val_loss,
        "test_acc": test_acc,
        "test_macro_f1": test_acc,
        "best_epoch": 3,
    }


def test_leaderboard_ranks_by_validation_and_lists_failures(tmp_path, capsys):
    fake_job(tmp_path, "0", ["optim=sgd", "seed=1"], done(0.80, 0.60, 0.99))
    fake_job(tmp_path, "1", ["optim=adam", "seed=1"], done(0.90, 0.50, 0.10))
    fake_job(tmp_path, "2", ["optim=rmsprop", "seed=1"], {"status": "failed", "error": "boom"})
    fake_job(tmp_path, "10", ["optim=adamw", "seed=1"], done(0.80, 0.40, 0.20))
    crashed = fake_job(tmp_path, "3", ["optim=adagrad", "seed=1"], None)
    (crashed / "train.log").write_text("[x][pricenet][INFO] - start\n[x][pricenet][ERROR] - OOM\n")

    rows = write_leaderboard(tmp_path, "val_acc")

    # Test accuracy never ranks: job 0 has the best test_acc but the worst val_acc.
    assert [r["job"] for r in rows] == ["1", "10", "0", "2", "3"]
    assert [r["status"] for r in rows] == ["done"] * 3 + ["failed"] * 2
    assert rows[3]["error"] == "boom"
    assert rows[4]["error"] == "[x][pricenet][ERROR] - OOM"
    assert_ranked(read_rows(tmp_path))
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "5 jobs (3 done, 2 failed), sorted by val_acc" in markdown
    assert "Overrides common to every job: `seed=1`" in markdown
    assert "| 1 | 1 | done | 0.9000 | 0.5000 | 0.1000 |" in markdown
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["command"] == "python -m pricenet.train optim=adam seed=1"
    assert best["val_acc"] == 0.90
    assert Path(best["job_dir"]) == (tmp_path / "1").resolve()

    by_loss = write_leaderboard(tmp_path, "val_loss")
    assert [r["job"] for r in by_loss][:3] == ["10", "1", "0"]
    main([str(tmp_path)])  # the rebuild command: back to val_acc
    assert "| 1 | 1 | done |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("monitor", "direction", "warned"),
    [
        ("val_loss", "maximize", "set hydra.sweeper.direction=minimize"),
        ("val_acc", "minimize", "set hydra.sweeper.direction=maximize"),
        ("val_loss", "minimize", None),
        ("val_acc", "maximize", None),
    ],
)
def test_a_sweeper_direction_against_the_monitor_is_named(
    tmp_path, caplog, monitor, direction, warned
):
    """The leaderboard and the sweeper read the monitor's direction from one Monitor."""
    from omegaconf import OmegaConf

    from pricenet.config.monitor import Monitor
    from pricenet.sweep import Leaderboard

    config = OmegaConf.create(
        {
            "monitor": monitor,
            "hydra": {"sweep": {"dir": str(tmp_path / "s")}, "sweeper": {"direction": direction}},
        }
    )
    with caplog.at_level("WARNING", logger="pricenet"):
        Leaderboard().on_multirun_start(config)
    assert (warned in caplog.text) if warned else not caplog.text
    assert (Monitor(monitor).direction == direction) is (warned is None)


def test_pruned_rows_come_between_done_and_failed_and_a_cut_json_is_a_failed_row(tmp_path):
    fake_job(tmp_path, "trial_0", ["optim=sgd"], done(0.50, 0.90, 0.5))
    fake_job(tmp_path, "trial_1", ["optim=sgd"], {"status": "failed", "error": "boom"})
    pruned = {"status": "pruned", "epochs_run": 4, "error": "pruned at epoch 4 (val_acc 0.3)"}
    fake_job(tmp_path, "trial_2", ["optim=adam"], {**pruned, "wall_time_s": 2.5})
    cut = fake_job(tmp_path, "trial_3", ["optim=adam"], done(0.99, 0.01, 0.99))
    (cut / "metrics.json").write_text('{"status": "done", "val_acc": 0.9')  # killed mid-write

    main([str(tmp_path)])  # the rebuild command must not crash on it

    rows = read_rows(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("trial_0", "done"),
        ("trial_2", "pruned"),
        ("trial_1", "failed"),
        ("trial_3", "failed"),
    ]
    assert (rows[1]["epochs_run"], rows[1]["wall_time_s"], rows[1]["val_acc"]) == ("4", "2.5", "")
    assert rows[1]["error"] == "pruned at epoch 4 (val_acc 0.3)"
    assert rows[3]["error"].startswith("metrics.json is unreadable (")
    assert "4 jobs (1 done, 1 pruned, 2 failed)" in (tmp_path / "leaderboard.md").read_text()


def cv(mean: float, std: float, low: float, high: float) -> dict:
    acc = {"mean": mean, "std": std, "ci95": [low, high], "n": 15}
    return {**done(0.9, 0.3, mean), "cv": {"acc": acc, "folds": 5, "repeats": 3}}


def test_cv_jobs_rank_by_their_mean_and_overlapping_intervals_are_ties(tmp_path):
    fake_job(tmp_path, "0", ["optim=sgd"], cv(0.950, 0.010, 0.944, 0.956))
    fake_job(tmp_path, "1", ["optim=adam"], cv(0.960, 0.012, 0.953, 0.967))
    fake_job(tmp_path, "2", ["optim=rmsprop"], cv(0.900, 0.020, 0.889, 0.911))
    fake_job(tmp_path, "3", ["optim=adagrad"], {"status": "failed", "error": "boom"})

    rows = write_leaderboard(tmp_path, "val_acc")

    # val_acc is the same for all: the held-out mean decides, then the intervals.
    assert [r["job"] for r in rows] == ["1", "0", "2", "3"]
    assert [r["tied"] for r in rows] == ["leader", "tied within noise", "", ""]
    assert rows[0]["cv_acc"] == 0.960 and rows[0]["cv_low"] == 0.953
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "sorted by the mean accuracy of each job's fits on rows they never saw" in markdown
    assert "| cv_acc | cv_std | cv_low | cv_high | tied |" in markdown
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["cv_acc"] == 0.960


# (the file, what it holds, what the failed row says)
DAMAGED = [
    (".hydra/overrides.yaml", "[optim=sgd", "overrides.yaml: not valid YAML"),
    (".hydra/overrides.yaml", "a: &x [1]\nb: *x\n", "aliases are not allowed"),
    (".hydra/overrides.yaml", "optim: sgd\n", "overrides.yaml is not a list of overrides"),
    (".hydra/overrides.yaml", "- [1, 2]\n", "overrides.yaml is not a list of overrides"),
    (".hydra/overrides.yaml", "- !!python/name:os.system\n", "not valid YAML"),
    ("metrics.json", '{"status": "done", "val_acc": "high"}', "val_acc is 'high'"),
    ("metrics.json", '{"status": ["done"]}', "metrics.json: status is ['done']"),
    ("metrics.json", '{"status": "failed", "error": {"x": 1}}', "metrics.json: error is"),
    ("metrics.json", "[" * 100_000 + "]" * 100_000, "metrics.json is unreadable"),
    ("metrics.json", '{"status": "done", "val_acc": 1' + "0" * 5000 + "}", "is unreadable"),
    ("metrics.json", '{"status": "done", "cv": {"acc": {"ci95": 3}}}', "ci95 is 3"),
    ("metrics.json", '{"status": "done", "cv": {"acc": {"ci95": [1]}}}', "not an interval"),
    ("metrics.json", '{"status": "done", "seeds": []}', "seeds is []"),
    ("metrics.json", None, "metrics.json cannot be read (Is a directory)"),
]


@pytest.mark.parametrize(("name", "text", "error"), DAMAGED)
def test_a_damaged_job_file_is_a_failed_row_and_the_board_stands(tmp_path, name, text, error):
    fake_job(tmp_path, "0", ["optim=sgd"], done(0.80, 0.60, 0.9))
    damaged = fake_job(tmp_path, "1", ["optim=adam"], done(0.90, 0.50, 0.9))
    path = damaged / name
    if text is None:  # a folder where the file belongs
        path.unlink()
        path.mkdir()
    else:
        path.write_text(text)

    rows = write_leaderboard(tmp_path, "val_acc")

    assert [(r["job"], r["status"]) for r in rows] == [("0", "done"), ("1", "failed")]
    assert error in rows[1]["error"], rows[1]["error"]
    assert rows[1]["val_acc"] is None
    assert "2 jobs (1 done, 1 failed)" in (tmp_path / "leaderboard.md").read_text()
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["overrides"] == ["optim=sgd"]


def test_a_damaged_run_json_only_loses_the_wall_time(tmp_path):
    job = fake_job(tmp_path, "0", ["optim=sgd"], done(0.80, 0.60, 0.9))
    (job / "run.json").write_text('{"wall_time_s": "slow"}')
    (row,) = write_leaderboard(tmp_path, "val_acc")
    assert (row["status"], row["wall_time_s"]) == ("done", None)


def test_leaderboard_csv_text_cells_are_formula_escaped_like_predict_output(tmp_path):
    formula = '=HYPERLINK("http://evil.example","x")'
    fake_job(tmp_path, "0", [formula, "optim.lr=-0.5"], done(0.80, 0.60, 0.9))
    fake_job(tmp_path, "1", ["optim=adam"], {"status": "failed", "error": "@SUM(1+1)"})

    rows = write_leaderboard(tmp_path, "val_acc")

    done_row, failed_row = read_rows(tmp_path)
    assert done_row["overrides"] == f"'{formula} optim.lr=-0.5"
    assert failed_row["error"] == "'@SUM(1+1)"
    assert (done_row["val_acc"], done_row["job"], failed_row["overrides"]) == (
        "0.8",
        "0",
        "optim=adam",
    )  # numbers and harmless text unchanged
    # what the code and best.yaml keep is the override as it ran, for rerunning it
    assert rows[0]["overrides"][0] == formula
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["overrides"][0] == formula


def test_an_unwritable_sweep_folder_is_one_line(tmp_path, capsys):
    from pricenet.sweep import check_sweep_dir

    fake_job(tmp_path, "0", ["optim=sgd"], done(0.80, 0.60, 0.9))
    (tmp_path / "leaderboard.csv").mkdir()  # a path the leaderboard cannot be written to
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leaderboard.csv: cannot write the leaderboard" in err

    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile: is not a folder"):
        check_sweep_dir(tmp_path / "afile")
    for where in (tmp_path / "afile" / "sweep", Path("/proc/pricenet-no")):
        with pytest.raises(ConfigError, match=f"hydra.sweep.dir={where}: cannot write there"):
            check_sweep_dir(where)


def test_set_threads_applies_and_restores_the_default():
    default = set_threads(None)
    assert set_threads(1) == 1
    assert set_threads(None) == default


def compose_full(*overrides: str) -> DictConfig:
    """The config with its ``hydra`` node (what a launcher or sweeper gets), shrunk."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("pricenet.conf", version_base="1.3"):
            return compose("config", [*SHRINK, *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def grid_jobs(grid: str) -> list[list[str]]:
    """The override lists a ready-made grid expands to (``glob(*)``: every group option)."""
    conf = files("pricenet.conf")
    sweeper = yaml.safe_load((conf / "grid" / f"{grid}.yaml").read_text())["hydra"]["sweeper"]
    axes = []
    for key, value in sweeper["params"].items():
        if value == "glob(*)":
            options = sorted(p.name.removesuffix(".yaml") for p in (conf / key).iterdir())
        else:
            options = str(value).split(",")
        axes.append([f"{key}={option}" for option in options])
    return [list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("grid", ["activation_init", "optimizers", "schedulers", "losses"])
def test_every_grid_names_real_choices_and_composes(compose_cfg, grid):
    expanded = grid_jobs(grid)
    assert len(expanded) > 1
    for key, option in (o.split("=", 1) for job in expanded for o in job):
        if "." not in key:  # a config group: the choice must exist
            assert (files("pricenet.conf") / key / f"{option}.yaml").is_file(), (key, option)
    validate(compose_cfg(f"grid={grid}", *expanded[-1]))


def test_launcher_presets_set_threads_and_resources():
    joblib = compose_full("launcher=joblib")
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher")
    assert (joblib.hydra.launcher.n_jobs, joblib.trainer.threads) == (-1, 1)

    slurm = compose_full(
        "launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.cpus_per_task=3"
    )
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (
        "gpu",
        3,
        8,
        60,
    )
    HydraConfig.instance().set_config(slurm)  # what a job sees: torch threads = its CPUs
    try:
        assert slurm.trainer.threads == 3
    finally:
        HydraConfig.instance().cfg = None


# --------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_basic_multirun_ranks_three_jobs_and_records_the_invalid_one(tmp_path):
    result = run_cli("--multirun", "optim.lr=0.05,0.001,-1", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    sweep_dir = only_sweep_dir(tmp_path)
    assert [p.name for p in job_dirs(sweep_dir)] == ["0", "1", "2"]
    rows = read_rows(sweep_dir)
    assert len(rows) == 3
    assert_ranked(rows)
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert rows[2]["job"] == "2"
    assert "optim.lr=-1 is invalid" in rows[2]["error"]
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["overrides"] == rows[0]["overrides"].split()
    assert best["val_acc"] == pytest.approx(float(rows[0]["val_acc"]))


@pytest.mark.slow
def test_joblib_two_workers_one_thread_each(tmp_path):
    result = run_cli(
        "--multirun", "launcher=joblib", "hydra.launcher.n_jobs=2", "optim=sgd,adam", *SMALL,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]

    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_rows(sweep_dir)
    assert sorted(r["overrides"].split()[1] for r in rows) == ["optim=adam", "optim=sgd"]
    assert {r["status"] for r in rows} == {"done"}
    assert_ranked(rows)
    for job in job_dirs(sweep_dir):
        assert json.loads((job / "run.json").read_text())["threads"] == 1


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    result = run_cli(
        "--multirun", "launcher=submitit_local", "optim=sgd,adam", *SMALL, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]

    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_rows(sweep_dir)
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"done"}
    assert_ranked(rows)
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2


@pytest.mark.slow
def test_submitit_slurm_preset_reaches_sbatch(tmp_path):
    """No cluster here: a stand-in ``sbatch`` keeps the script submitit writes, then fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "job.sbatch"
    for name, body in (("srun", "exit 1"), ("sbatch", f'cp "$1" {script}\nexit 1')):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    overrides = [
        "launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_task=1",
        "hydra.launcher.cpus_per_task=2",
        "hydra.launcher.mem_gb=16",
        "hydra.launcher.timeout_min=90",
    ]
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    result = run_cli("--multirun", *overrides, "optim=sgd,adam", cwd=tmp_path, env={"PATH": path})

    assert result.returncode != 0
    sbatch = script.read_text()
    for line in (
        "--array=0-1",
        "--partition=gpu",
        "--gpus-per-task=1",
        "--cpus-per-task=2",
        "--mem=16GB",
        "--time=90",
    ):
        assert f"#SBATCH {line}" in sbatch


@pytest.mark.slow
def test_optuna_search_tops_its_study_up_to_the_total(tmp_path):
    optuna = pytest.importorskip("optuna")
    search = ["--multirun", "hparams_search=optuna", *SMALL]

    first = run_cli(*search, "hydra.sweeper.n_trials=4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    sweep_dir = tmp_path / "outputs" / "search" / "pricenet"
    first_jobs = {job: (job / "metrics.json").read_text() for job in job_dirs(sweep_dir)}
    assert sorted(job.name for job in first_jobs) == [f"trial_{n}" for n in range(4)]

    # n_trials is the total: 6 runs the 2 missing ones; 6 again runs none.
    again = run_cli(*search, "hydra.sweeper.n_trials=6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    full = run_cli(*search, "hydra.sweeper.n_trials=6", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    assert "Launching" not in full.stdout + full.stderr

    study = optuna.load_study(study_name="pricenet", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert len(study.trials) == 6
    assert len(job_dirs(sweep_dir)) == 6
    for job, metrics in first_jobs.items():  # the second run wrote next to the first
        assert (job / "metrics.json").read_text() == metrics
    rows = read_rows(sweep_dir)
    assert len(rows) == 6
    assert_ranked(rows)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == sum(r["status"] == "done" for r in rows)
    assert float(rows[0]["val_acc"]) == pytest.approx(study.best_value)
    assert (sweep_dir / "optimization_history.png").is_file()
