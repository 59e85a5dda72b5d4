"""Sweeps as real SLURM jobs on the one-node cluster of scripts/cluster/cluster.sh.

Checked through SLURM's own accounting (``sacct``, from slurmdbd): the jobs ran as array tasks,
concurrently where asked, and a task cancelled with ``scancel`` costs its trial a retry, not the
search. Without the cluster these tests skip and say why.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import SHRINK, cluster_state, run_cli
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")
pytest.importorskip("submitit")

from optuna.trial import TrialState  # noqa: E402

from hydra_plugins.pricenet_optuna_sweeper import _study  # noqa: E402
from hydra_plugins.pricenet_optuna_sweeper.shared_dir import (  # noqa: E402
    MARKER,
    SharedSweepDir,
    fs_type,
    unshared_reason,
)

# One CPU and 1 GB per task: two tasks run at once on a two-core machine.
SLURM = [
    "launcher=submitit_slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    *SHRINK,
    "report.plots=false",
    "report.tensorboard=false",
]
SEARCH = ["--multirun", "hparams_search=optuna", "hydra.sweeper.pruner=none", *SLURM]
TERMINAL = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
}


def sacct(sweep_dir: Path, expected: int) -> dict[str, dict[str, str]]:
    """SLURM's record of every array task the sweep submitted, once all ``expected`` ended."""
    arrays = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("[0-9]*")})
    command = ["sacct", "-X", "-n", "-P", "-j", ",".join(arrays), "-o", "JobID,State,Start,End"]
    deadline = time.monotonic() + 60  # slurmctld hands job ends to slurmdbd asynchronously
    while True:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        tasks = {}
        for line in out.splitlines():
            job, state, start, end = line.split("|")
            tasks[job] = {"state": state.split()[0], "start": start, "end": end}
        ended = [t for t in tasks.values() if t["state"] in TERMINAL]
        if len(ended) >= expected or time.monotonic() > deadline:
            return tasks
        time.sleep(1)


def read_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "leaderboard.csv").open() as handle:
        return list(csv.DictReader(handle))


def storage_for(name: str) -> tuple[str, list[str]]:
    """The PostgreSQL server when it is up (SLURM tasks sharing a real database), else SQLite."""
    state = cluster_state()
    if state.get("postgres") == "up":
        url = state["postgres_url"]
        return url, [f"hydra.sweeper.storage={url}"]
    return "", []


@pytest.mark.cluster
@pytest.mark.slow
def test_an_optuna_search_runs_as_two_concurrent_array_tasks(tmp_path, slurm_cluster):
    name = f"slurm{os.getpid()}{time.time_ns() % 10**6}"
    url, storage = storage_for(name)
    result = run_cli(
        *SEARCH, *storage, f"hydra.sweeper.study_name={name}", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2", "hydra.launcher.array_parallelism=2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    sweep_dir = tmp_path / "outputs" / "search" / name
    tasks = sacct(sweep_dir, 4)
    assert len(tasks) == 4 and {t["state"] for t in tasks.values()} == {"COMPLETED"}, tasks
    arrays = sorted({job.split("_")[0] for job in tasks})
    assert sorted(tasks) == sorted(f"{a}_{i}" for a in arrays for i in (0, 1))  # 2 arrays of 2
    first = [tasks[f"{arrays[0]}_{i}"] for i in (0, 1)]
    starts = [datetime.fromisoformat(t["start"]) for t in first]
    ends = [datetime.fromisoformat(t["end"]) for t in first]
    assert max(starts) < min(ends), first  # the two tasks of an array ran at the same time

    study = optuna.load_study(
        study_name=name, storage=_study.open_storage(url or f"sqlite:///{sweep_dir}/optuna.db")
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    rows = read_rows(sweep_dir)
    assert sorted(r["job"] for r in rows) == [f"trial_{n}" for n in range(4)]
    assert {r["status"] for r in rows} == {"done"}
    assert float(rows[0]["val_acc"]) == pytest.approx(study.best_value)
    for plot in ("optimization_history.png", "param_importances.png"):
        assert (sweep_dir / plot).stat().st_size > 0
    assert (sweep_dir / MARKER).is_file()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_grid_runs_as_one_slurm_array(tmp_path, slurm_cluster):
    result = run_cli("--multirun", *SLURM, "optim=sgd,adam", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    tasks = sacct(sweep_dir, 2)
    (array,) = {job.split("_")[0] for job in tasks}
    assert tasks.keys() == {f"{array}_0", f"{array}_1"}
    assert {t["state"] for t in tasks.values()} == {"COMPLETED"}
    rows = read_rows(sweep_dir)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    assert {r["overrides"].split("optim=")[1].split()[0] for r in rows} == {"sgd", "adam"}


@pytest.mark.cluster
@pytest.mark.slow
def test_a_scancelled_task_fails_its_trial_which_is_retried(tmp_path, slurm_cluster):
    name = "scancel"
    sweep_dir = tmp_path / "outputs" / "search" / name
    env = {**os.environ, "PRICENET_ROOT": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    long = ["trainer.epochs=150", "trainer.patience=null"]  # still training when cancelled
    search = subprocess.Popen(
        [sys.executable, "-m", "pricenet.train", *SEARCH, *long, f"hydra.sweeper.study_name={name}",
         "hydra.sweeper.n_trials=2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (sweep_dir / "trial_0" / "metrics.csv").is_file():  # trial 0 is training
            assert search.poll() is None and time.monotonic() < deadline, search.communicate()[1]
            time.sleep(0.2)
        (job,) = [p.name for p in (sweep_dir / ".submitit").glob("[0-9]*")]  # trial 0's task
        subprocess.run(["scancel", job], check=True)
        _, err = search.communicate(timeout=600)
    finally:
        search.kill()  # no-op once it ended; never leave a driver behind a failed assert
    assert search.returncode == 0, err[-3000:]

    tasks = sacct(sweep_dir, 3)
    assert tasks[job]["state"] == "CANCELLED"
    assert sorted(t["state"] for t in tasks.values()) == ["CANCELLED", "COMPLETED", "COMPLETED"]
    trials = optuna.load_study(
        study_name=name, storage=_study.open_storage(f"sqlite:///{sweep_dir}/optuna.db")
    ).trials
    assert trials[0].state == TrialState.FAIL
    assert "its job did not finish" in trials[0].user_attrs["error"]
    (retry,) = [t for t in trials if t.user_attrs.get(_study.RETRY_OF) == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert len(_study.counted(trials)) == 2
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    rows = {r["job"]: r for r in read_rows(sweep_dir)}
    assert rows["trial_0"]["status"] == "failed" and len(rows) == 3


# ------------------------------------------------ the shared sweep folder, without a cluster


def test_a_local_sweep_folder_is_refused_only_when_other_nodes_may_run_the_jobs(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/home /home nfs4 rw 0 0\n")
    assert fs_type(Path("/home/me/sweeps"), str(mounts)) == "nfs4"
    assert fs_type(Path("/tmp/sweeps"), str(mounts)) == "ext4"

    alone = unshared_reason(Path("/tmp/s"), "ext4", {"login1"}, "login1.cluster.org")
    assert alone is None  # one node, this one: its local disk is everyone's
    assert unshared_reason(Path("/home/me/s"), "nfs4", {"n1", "n2"}, "login1") is None
    reason = unshared_reason(Path("/tmp/s"), "ext4", {"n1", "n2", "n3", "n4"}, "login1")
    assert reason.startswith("hydra.sweep.dir=/tmp/s is on a ext4 filesystem local to login1")
    assert "n1, n2, n3 and 1 more" in reason
    assert "hydra.callbacks.shared_sweep_dir.check=false" in reason


def test_a_job_that_cannot_see_the_drivers_marker_fails_saying_so(tmp_path):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    with pytest.raises(RuntimeError, match=f"{MARKER} missing"):
        SharedSweepDir().on_job_start(config)
    SharedSweepDir(check=False).on_job_start(config)  # told that it is shared
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / MARKER).write_text("host=x\n")
    SharedSweepDir().on_job_start(config)
