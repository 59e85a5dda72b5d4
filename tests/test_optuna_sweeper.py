"""pricenet's Optuna sweeper: search space, study totals, dead workers, pruning, many workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SHRINK, run_cli
from helpers import assert_png, full_disk_on_savefig
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")

from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial  # noqa: E402

from hydra_plugins.pricenet_optuna_sweeper import _study  # noqa: E402
from hydra_plugins.pricenet_optuna_sweeper._plots import (  # noqa: E402
    HISTORY,
    IMPORTANCES,
    write_plots,
)
from hydra_plugins.pricenet_optuna_sweeper._space import parse  # noqa: E402
from hydra_plugins.pricenet_optuna_sweeper.config import PricenetOptunaSweeperConf  # noqa: E402
from pricenet.atomic import WriteError  # noqa: E402
from pricenet.engine.pruning import OptunaPruning  # noqa: E402

SMALL = [*SHRINK, "report.plots=false", "report.tensorboard=false"]
STATES = {"COMPLETE", "PRUNED", "FAIL"}


def sweeper_cfg(**changes):
    cfg = OmegaConf.structured(PricenetOptunaSweeperConf)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def read_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "leaderboard.csv").open() as handle:
        return list(csv.DictReader(handle))


def load(storage: str, name: str = "pricenet"):
    return optuna.load_study(study_name=name, storage=_study.open_storage(storage))


# --------------------------------------------------------------------------- fast unit tests


def test_search_space_keeps_the_old_syntax_and_cli_values_pin_it():
    space = parse(
        [
            "optim=choice(sgd, adam)",
            "optim.lr=tag(log, interval(1e-4, 1e-1))",
            "model.dropout=interval(0.0, 0.5)",
            "model.hidden=choice('[64]', '[128,64]')",
            "trainer.batch_size=range(16, 65, 16)",
            "activation=choice(relu, tanh)",
            "trainer.epochs=3",
            "activation=gelu",  # the command line pins a searched key
        ]
    )
    dists = space.distributions
    assert dists["optim"] == CategoricalDistribution(["sgd", "adam"])
    assert dists["optim.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert dists["model.hidden"] == CategoricalDistribution(["[64]", "[128,64]"])
    assert dists["trainer.batch_size"] == IntDistribution(16, 64, step=16)
    assert "activation" not in dists
    assert space.fixed == ["trainer.epochs=3", "activation=gelu"]

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    overrides = space.overrides(study.ask())
    assert [o.split("=")[0] for o in overrides][:5] == list(dists)
    assert overrides[-2:] == ["trainer.epochs=3", "activation=gelu"]


def trial(number: int, state: TrialState, **user_attrs):
    frozen = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None)
    frozen.number = number
    frozen.user_attrs = user_attrs
    return frozen


def test_the_budget_counts_finished_and_running_trials_and_a_retry_once():
    trials = [
        trial(0, TrialState.COMPLETE),
        trial(1, TrialState.PRUNED),
        trial(2, TrialState.FAIL),  # a job error: counts
        trial(3, TrialState.FAIL),  # a dead worker's trial, retried as 5: counts through 5
        trial(4, TrialState.RUNNING),  # another live worker's: counts
        trial(5, TrialState.WAITING, retry_of=3),  # not run yet: does not count
    ]
    assert [t.number for t in _study.counted(trials)] == [0, 1, 2, 4]
    assert _study.missing(trials, 6) == 2
    assert _study.missing(trials, 3) == 0
    # Two workers asked trials 6 and 7 when one was missing: 7 is the surplus one.
    trials += [trial(6, TrialState.RUNNING), trial(7, TrialState.RUNNING)]
    assert not _study.surplus(trials, 6, 5)
    assert _study.surplus(trials, 7, 5)


def test_a_silent_running_trial_is_failed_and_retried_once(tmp_path):
    cfg = sweeper_cfg(storage=f"journal:{tmp_path}/study.log", study_name="s")
    study = _study.open_study(cfg, tmp_path, create=True)
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    with _study.Heartbeat(study, [first.number], interval=60):
        pass
    alive = study.get_trials()[0]
    assert alive.system_attrs[_study.HEARTBEAT] >= alive.datetime_start.timestamp()

    assert _study.fail_stale(study, grace_period=60, max_retry=1) == []  # heard just now
    time.sleep(0.05)
    assert _study.fail_stale(study, grace_period=0.01, max_retry=1) == [0]

    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert "no heartbeat" in failed.user_attrs["error"]
    assert retry.state == TrialState.WAITING
    assert retry.user_attrs == {_study.RETRY_OF: 0, _study.RETRIES: 1}
    assert _study.missing(study.get_trials(), 1) == 1  # the retry is still to run

    again = study.ask()  # the retry, with the same parameters
    assert again.number == 1
    assert again.suggest_float("x", 0.0, 1.0) == failed.params["x"]
    time.sleep(0.05)
    assert _study.fail_stale(study, grace_period=0.01, max_retry=1) == [1]
    assert len(study.get_trials()) == 2  # max_retry=1: no third attempt


def test_a_surplus_trial_goes_back_to_the_queue(tmp_path):
    study = _study.open_study(sweeper_cfg(study_name="s"), tmp_path, create=True)
    trial_ = study.ask()
    _study.give_back(study, trial_.number)
    assert study.get_trials()[0].state == TrialState.WAITING
    assert study.ask().number == 0


def test_unknown_pruner_or_sampler_is_one_clear_error(tmp_path):
    with pytest.raises(_study.SweepConfigError, match=r"pruner=mediam: unknown; choose one of"):
        _study.make_pruner(sweeper_cfg(pruner="mediam"))
    with pytest.raises(_study.SweepConfigError, match=r"sampler=tp: unknown"):
        _study.make_sampler(sweeper_cfg(sampler="tp"), 0)
    for name in ("none", "median", "successive_halving", "hyperband"):
        assert isinstance(_study.make_pruner(sweeper_cfg(pruner=name)), optuna.pruners.BasePruner)
    seeded = sweeper_cfg(sampler="random", seed=3)
    draw = [
        _study.make_sampler(seeded, k)._rng.rng.random()
        for k in (0, 1, 0)  # noqa: SLF001
    ]
    assert draw[0] == draw[2] != draw[1]


def test_pruning_callback_reports_each_epoch_and_records_the_pruned_job():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5)
    )
    callback = OptunaPruning(study.ask(), "val_acc")
    history = [0.6, 0.55, 0.4]
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=0))
    trainer.monitor_value = lambda: history[trainer.state.epoch - 1]

    for epoch in (1, 2):
        trainer.state.epoch = epoch
        callback.on_epoch_end(trainer)
    trainer.state.epoch = 3
    with pytest.raises(optuna.TrialPruned, match=r"pruned at epoch 3 \(val_acc 0.4000\)"):
        callback.on_epoch_end(trainer)

    assert study.trials[0].intermediate_values == {1: 0.6, 2: 0.55, 3: 0.4}
    assert callback.pruned is not None
    assert (callback.pruned["status"], callback.pruned["epochs_run"]) == ("pruned", 3)


def finished_study(trials: int = 4) -> optuna.Study:
    """An in-memory study with ``trials`` complete trials over two parameters."""
    study = optuna.create_study(direction="maximize")
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "depth": IntDistribution(1, 4)}
    for n in range(trials):
        lr, depth = 10 ** -(1 + n % 3), 1 + n % 4
        study.add_trial(
            create_trial(params={"lr": lr, "depth": depth}, distributions=space, value=depth - lr)
        )
    return study


def test_study_pictures_go_through_the_one_png_writer_and_close_their_figures(
    tmp_path, monkeypatch
):
    """Both pictures are whole PNGs written atomically (pricenet.run.plots.save_png); a full
    disk keeps the old picture, leaves no temporary file and no open pyplot figure."""
    import matplotlib.pyplot as plt

    study = finished_study()
    written = write_plots(study, tmp_path)
    assert [p.name for p in written] == [HISTORY, IMPORTANCES]
    for path in written:
        assert_png(path, min_size=(800, 500))
    assert plt.get_fignums() == []
    old = (tmp_path / HISTORY).read_bytes()

    full_disk_on_savefig(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        write_plots(study, tmp_path)
    assert (tmp_path / HISTORY).read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([HISTORY, IMPORTANCES])
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------- real searches

# The sweeper on its own (hparams_search=optuna has a bigger space), small and quiet; the
# study lives in <root>/outputs/search/pricenet, one folder per trial.
SWEEPER = [
    "--multirun",
    "hydra/sweeper=pricenet_optuna",
    "hydra.sweeper.study_name=pricenet",
    "hydra.sweep.dir=${paths.root_dir}/outputs/search/pricenet",
    "hydra.sweep.subdir=trial_${hydra.sweeper.trial}",
    *SMALL,
]
SEARCH = [
    *SWEEPER,
    "hydra.sweeper.pruner=none",
    "optim.lr=tag(log, interval(1e-3, 1e-1))",
    "activation=choice(relu, tanh)",
]


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


@pytest.mark.slow
def test_two_workers_share_one_study_and_reach_exactly_its_total(tmp_path):
    workers = [worker(tmp_path, "hydra.sweeper.n_trials=8") for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-2000:]

    sweep_dir = tmp_path / "outputs" / "search" / "pricenet"
    study = load(f"sqlite:///{sweep_dir}/optuna.db")
    finished = [t for t in study.trials if t.state.name in STATES]
    assert len(finished) == 8
    assert sorted(t.number for t in finished) == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in finished)
    # Both workers ran trials (each launched its own jobs).
    ran = [(out + err).count("Launching 1 jobs") for out, err in outputs]
    assert sum(ran) == 8 and min(ran) >= 1, ran
    rows = read_rows(sweep_dir)
    assert sorted(r["job"] for r in rows) == sorted(f"trial_{n}" for n in range(8))
    assert float(rows[0]["val_acc"]) == pytest.approx(study.best_value)
    assert (sweep_dir / "optimization_history.png").stat().st_size > 0
    assert (sweep_dir / "param_importances.png").stat().st_size > 0


@pytest.mark.slow
def test_a_killed_worker_trial_is_retried_and_the_rerun_tops_up(tmp_path):
    journal = tmp_path / "shared" / "study.log"
    storage = f"journal:{journal}"
    args = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.heartbeat_interval=0.5"]
    sweep_dir = tmp_path / "outputs" / "search" / "pricenet"
    long = ("trainer.epochs=2000", "trainer.patience=null")  # still training when killed
    slow = worker(tmp_path, *args, "hydra.sweeper.n_trials=3", *long)
    deadline = time.monotonic() + 120
    while not (sweep_dir / "trial_0" / "metrics.csv").is_file():  # trial 0 is training
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()[1][-2000:]
        time.sleep(0.2)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert load(storage).trials[0].state == TrialState.RUNNING
    time.sleep(1.5)  # > the grace period (2 heartbeats): trial 0 is now silent

    again = worker(tmp_path, *args, "hydra.sweeper.n_trials=3")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]

    trials = load(storage).trials
    assert trials[0].state == TrialState.FAIL
    assert "no heartbeat" in trials[0].user_attrs["error"]
    retry = [t for t in trials if t.user_attrs.get(_study.RETRY_OF) == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[0].params
    assert len(_study.counted(trials)) == 3
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    rows = {r["job"]: r for r in read_rows(sweep_dir)}
    assert len(rows) == 4  # three complete trials and the killed one
    assert rows["trial_0"]["status"] == "failed"
    assert "did not finish" in rows["trial_0"]["error"]


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned_before_its_last_epoch_in_another_process(tmp_path):
    epochs = 8
    prune = [
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruners.median.n_startup_trials=1",
        "hydra.sweeper.pruners.median.n_warmup_steps=2",
        f"trainer.epochs={epochs}",
        "data.n_rows=400",
    ]
    search = [*SWEEPER, *prune]
    good = run_cli(*search, "hydra.sweeper.n_trials=1", "optim=adam", "optim.lr=0.01", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]
    # The hopeless region: sgd at lr=1e-7 never leaves chance level. Its job runs in a joblib
    # worker process and must still find its trial, report, and be stopped.
    bad = run_cli(
        *search,
        "hydra.sweeper.n_trials=2",
        "optim=sgd",
        "optim.lr=1e-7",
        "launcher=joblib",
        "hydra.launcher.n_jobs=1",
        cwd=tmp_path,
    )
    assert bad.returncode == 0, bad.stderr[-2000:]
    assert "Error executing job" not in bad.stderr + bad.stdout

    sweep_dir = tmp_path / "outputs" / "search" / "pricenet"
    metrics = json.loads((sweep_dir / "trial_1" / "metrics.json").read_text())
    assert metrics["status"] == "pruned"
    assert 2 <= metrics["epochs_run"] < epochs  # not during the warm-up, before the end
    with (sweep_dir / "trial_1" / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == metrics["epochs_run"]
    study = load(f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert max(study.trials[1].intermediate_values) == metrics["epochs_run"]
    rows = read_rows(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("trial_0", "done"), ("trial_1", "pruned")]
    assert rows[1]["epochs_run"] == str(metrics["epochs_run"])


@pytest.mark.slow
def test_an_all_failing_study_writes_its_leaderboard_and_exits_non_zero(tmp_path):
    result = run_cli(
        "--multirun", "hparams_search=optuna", *SMALL, "hydra.sweeper.n_trials=2", "optim.lr=-1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: all 2 jobs failed (first error: ")
    assert "optim.lr=-1 is invalid" in last
    sweep_dir = tmp_path / "outputs" / "search" / "pricenet"
    rows = read_rows(sweep_dir)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("optim.lr=-1 is invalid" in r["error"] for r in rows)
    study = load(f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert not (sweep_dir / "optimization_history.png").exists()
