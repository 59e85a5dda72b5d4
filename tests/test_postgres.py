"""A study in a real PostgreSQL server: many workers, a killed one, a server restart, bad URLs.

The server is the one scripts/cluster/cluster.sh starts (CI runs it first); without it these
tests skip and say why. Each test uses its own study in the server's ``pricenet`` database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import SHRINK, run_cli

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2")

from optuna.trial import TrialState  # noqa: E402

from hydra_plugins.pricenet_optuna_sweeper import _study  # noqa: E402

pytestmark = pytest.mark.postgres

SEARCH = [
    "--multirun",
    "hparams_search=optuna",
    "hydra.sweeper.pruner=none",
    *SHRINK,
    "report.plots=false",
    "report.tensorboard=false",
]


def study_args(url: str, name: str) -> list[str]:
    return [f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}"]


def worker(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PRICENET_ROOT": str(root)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pricenet.train", *SEARCH, *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*workers: subprocess.Popen) -> list[str]:
    """Wait for the workers; each must succeed. Returns their logs (stdout and stderr)."""
    logs = []
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
        logs.append(out + err)
    return logs


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.mark.slow
def test_local_workers_share_one_postgres_study_and_count_exactly(tmp_path, postgres):
    name = unique()
    args = [*study_args(postgres["postgres_url"], name), "hydra.sweeper.n_trials=6"]
    joblib = ["launcher=joblib", "hydra.launcher.n_jobs=1"]
    workers = [worker(tmp_path, *args, *joblib) for _ in range(2)]
    finish(*workers)

    study = optuna.load_study(study_name=name, storage=postgres["postgres_url"])
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    rows = (tmp_path / "outputs" / "search" / name / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 1 + 6


@pytest.mark.slow
def test_a_killed_postgres_worker_trial_fails_by_heartbeat_and_is_retried(tmp_path, postgres):
    name = unique()
    args = [*study_args(postgres["postgres_url"], name), "hydra.sweeper.heartbeat_interval=0.5"]
    sweep_dir = tmp_path / "outputs" / "search" / name
    long = ("trainer.epochs=2000", "trainer.patience=null")  # still training when killed
    slow = worker(tmp_path, *args, "hydra.sweeper.n_trials=3", *long)
    deadline = time.monotonic() + 120
    while not (sweep_dir / "trial_0" / "metrics.csv").is_file():
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()[1][-2000:]
        time.sleep(0.2)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    time.sleep(1.5)  # > the grace period (2 heartbeats)

    finish(worker(tmp_path, *args, "hydra.sweeper.n_trials=3"))
    trials = optuna.load_study(study_name=name, storage=postgres["postgres_url"]).trials
    assert trials[0].state == TrialState.FAIL
    assert "no heartbeat" in trials[0].user_attrs["error"]
    (retry,) = [t for t in trials if t.user_attrs.get(_study.RETRY_OF) == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert len(_study.counted(trials)) == 3
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@pytest.mark.slow
def test_a_postgres_restart_mid_search_loses_nothing(tmp_path, postgres):
    name = unique()
    n_trials = 4
    args = [*study_args(postgres["postgres_url"], name), f"hydra.sweeper.n_trials={n_trials}"]
    # Jobs in joblib workers report every epoch, so the restart lands while they talk to it.
    joblib = ["launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    search = worker(tmp_path, *args, *joblib, "trainer.epochs=40", "trainer.patience=null")
    sweep_dir = tmp_path / "outputs" / "search" / name
    deadline = time.monotonic() + 180
    while not (sweep_dir / "trial_1" / "metrics.csv").is_file():
        assert search.poll() is None and time.monotonic() < deadline, search.communicate()[1]
        time.sleep(0.2)
    restarted = subprocess.run(postgres["postgres_restart"].split(), capture_output=True)
    assert restarted.returncode == 0, restarted.stderr
    assert search.poll() is None, "the search ended before the restart: make trials longer"

    finish(search)
    # The jobs did lose the server, and retried (each job logs into its own folder).
    logs = "".join(p.read_text() for p in sweep_dir.glob("trial_*/train.log"))
    assert "database unreachable" in logs
    trials = optuna.load_study(study_name=name, storage=postgres["postgres_url"]).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials
    assert all(len(t.intermediate_values) == 40 for t in trials)  # every epoch's report kept


@pytest.mark.slow
@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("postgresql+psycopg2://pricenet:s3cret-pw@127.0.0.1:1/pricenet", "Connection refused"),
        ("postgresql+nosuchdriver://pricenet:s3cret-pw@127.0.0.1/pricenet", "Can't load plugin"),
        ("postgresql://pricenet:s3cret-pw@127.0.0.1:notaport/pricenet", "expected journal:"),
    ],
    ids=["closed-port", "unknown-driver", "malformed"],
)
def test_an_unusable_storage_is_one_error_line_without_its_password(tmp_path, storage, says):
    result = run_cli(*SEARCH, f"hydra.sweeper.storage={storage}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.strip()][-1:]
    assert line.startswith("error: hydra.sweeper.storage=postgresql")
    assert "pricenet:***@127.0.0.1" in line and says in line
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_wrong_password_is_one_error_line_without_it(tmp_path, postgres):
    url = postgres["postgres_url"].replace(":pricenet@", ":wr0ng-pw@")
    result = run_cli(*SEARCH, f"hydra.sweeper.storage={url}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper.storage=postgresql+psycopg2://pricenet:***@")
    assert "password authentication failed" in last
    assert "wr0ng-pw" not in result.stderr + result.stdout


def test_a_lost_connection_is_retried_and_a_bad_query_is_not(monkeypatch):
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    monkeypatch.setattr(_study.time, "sleep", lambda _: None)
    calls = []

    def flaky(value):
        calls.append(value)
        if len(calls) < 3:  # the server restarts: two calls find no connection
            try:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            except OperationalError as err:
                raise StorageInternalError("commit failed") from err
        return value

    assert _study._retried(flaky)(7) == 7 and calls == [7, 7, 7]

    def bad(value):
        calls.append(value)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    calls.clear()
    with pytest.raises(IntegrityError):
        _study._retried(bad)(1)
    assert calls == [1]  # not retried
