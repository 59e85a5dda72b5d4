"""One worker's part of a study: ask for what is missing, launch it, tell how it ended.

Any number of workers (processes, cluster jobs) may run this against one storage: the budget is
the study's total, heartbeats tell a live worker's trials from a dead one's, and each job finds
its own trial through ``hydra.sweeper.trial`` to report every epoch and be pruned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig
from optuna.trial import TrialState

from pricenet.errors import first_line

from ._plots import write_plots
from ._space import SearchSpace, parse
from ._study import (
    Heartbeat,
    counted,
    fail_and_retry,
    fail_stale,
    give_back,
    make_sampler,
    missing,
    open_study,
    redact,
    storage_url,
    surplus,
)

log = logging.getLogger(__name__)
ERROR_CHARS = 500  # an error kept as a trial attribute (the job folder has all of it)


def _lost_job(err: BaseException) -> bool:
    """Whether ``err`` is submitit's word that a job ended without a result (scancel, pre-emption,
    time limit, node failure): the trial is lost, the search is not."""
    try:
        from submitit.core.utils import UncompletedJobError
    except ImportError:  # no submitit: no such jobs
        return False
    return isinstance(err, UncompletedJobError)


class Search:
    """Runs trials of the study ``config.hydra.sweeper`` describes until it has ``n_trials``."""

    def __init__(self, config: DictConfig, launcher: Launcher) -> None:
        self.cfg = config.hydra.sweeper
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.launcher = launcher
        self.grace_period = self.cfg.grace_period or 2 * self.cfg.heartbeat_interval
        self.job_idx = 0

    def run(self, arguments: Sequence[str]) -> optuna.Study:
        """Top the study up to ``n_trials`` and draw its pictures; returns the study."""
        params = [f"{key}={value}" for key, value in (self.cfg.params or {}).items()]
        space = parse([*params, *arguments])
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = open_study(self.cfg, self.sweep_dir, create=True)
        trials = study.get_trials(deepcopy=False)
        log.info(
            "study %s in %s: %d of %d trials counted, %d to run",
            study.study_name,
            redact(storage_url(self.cfg.storage, self.sweep_dir)),
            len(counted(trials)),
            self.cfg.n_trials,
            missing(trials, self.cfg.n_trials),
        )
        while batch := self._ask(study, space):
            self._run_batch(study, batch)
        self._summarize(study)
        return study

    def _ask(self, study: optuna.Study, space: SearchSpace) -> list[tuple[optuna.Trial, list[str]]]:
        """Up to ``n_jobs`` new trials with their overrides; none once the study is full."""
        fail_stale(study, self.grace_period, self.cfg.max_retry)
        batch: list[tuple[optuna.Trial, list[str]]] = []
        for _ in range(self.cfg.n_jobs):
            if not missing(study.get_trials(deepcopy=False), self.cfg.n_trials):
                break
            trial = study.ask()
            if surplus(study.get_trials(deepcopy=False), trial.number, self.cfg.n_trials):
                give_back(study, trial.number)
                break
            study.sampler = make_sampler(self.cfg, trial.number)
            overrides = [*space.overrides(trial), f"hydra.sweeper.trial={trial.number}"]
            batch.append((trial, overrides))
        return batch

    def _run_batch(self, study: optuna.Study, batch: list[tuple[optuna.Trial, list[str]]]) -> None:
        """Launch the batch under a heartbeat and tell each trial how its job ended."""
        numbers = [trial.number for trial, _ in batch]
        try:
            with Heartbeat(study, numbers, self.cfg.heartbeat_interval):
                returns = self.launcher.launch(
                    [overrides for _, overrides in batch], initial_job_idx=self.job_idx
                )
        except BaseException as err:
            # A job the scheduler cancelled, pre-empted or lost: its trial, and those of the
            # batch the launcher no longer waits for, fail and are retried; the search goes on.
            # Ctrl-C or a launcher that broke stops it. Either way nothing is left RUNNING.
            lost = _lost_job(err)
            first = first_line(err, "")[:ERROR_CHARS]
            reason = f"its job did not finish ({first})" if lost else "the sweep stopped"
            for number in numbers:
                trial = study.get_trials(deepcopy=False)[number]
                if not trial.state.is_finished():
                    fail_and_retry(study, trial, reason, self.cfg.max_retry)
            if not lost:
                raise
            self.job_idx += len(batch)
            return
        self.job_idx += len(returns)
        for (trial, _), ret in zip(batch, returns, strict=True):
            self._tell(study, trial, ret)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        """COMPLETE with the job's value, PRUNED if the job stopped itself, FAIL otherwise."""
        if ret.hydra_cfg is not None:
            trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
        if ret.status == JobStatus.FAILED:
            # The job's exception (reading ret.return_value would log it as an error first).
            err = ret._return_value  # noqa: SLF001
            if isinstance(err, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d %s", trial.number, err)
            else:
                self._fail(study, trial, f"{type(err).__name__}: {err}")
            return
        try:
            value = float(ret.return_value)
        except (TypeError, ValueError):
            self._fail(study, trial, f"the job returned {ret.return_value!r}, not a number")
            return
        if not math.isfinite(value):
            self._fail(study, trial, f"the job returned {value} (see its metrics.json)")
            return
        study.tell(trial, value)  # optuna logs the value and the parameters

    @staticmethod
    def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("error", reason[:ERROR_CHARS])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason.splitlines()[0] if reason else "")

    def _summarize(self, study: optuna.Study) -> None:
        """Log where the study stands and write its pictures into the sweep folder."""
        trials = study.get_trials(deepcopy=False)
        states = {s: sum(t.state == s for t in trials) for s in TrialState}
        log.info(
            "study %s: %d complete, %d pruned, %d failed, %d running elsewhere (n_trials=%d)",
            study.study_name,
            states[TrialState.COMPLETE],
            states[TrialState.PRUNED],
            states[TrialState.FAIL],
            states[TrialState.RUNNING],
            self.cfg.n_trials,
        )
        if states[TrialState.COMPLETE]:
            best = study.best_trial
            log.info("best value %s (trial %d): %s", best.value, best.number, best.params)
        write_plots(study, self.sweep_dir)
