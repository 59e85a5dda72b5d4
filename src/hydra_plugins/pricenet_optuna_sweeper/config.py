"""The sweeper's typed config, stored as ``hydra/sweeper=pricenet_optuna``.

Samplers and pruners are named ``_target_`` presets: ``hydra.sweeper.sampler=random`` or
``hydra.sweeper.pruner=hyperband`` picks one, ``hydra.sweeper.pruners.median.n_warmup_steps=10``
tunes it, and a new preset is one more mapping under ``samplers``/``pruners``.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    """Which way the job's return value is better."""

    minimize = 1
    maximize = 2


def _samplers() -> dict[str, Any]:
    return {
        "tpe": {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 10},
        "random": {"_target_": "optuna.samplers.RandomSampler"},
        "cmaes": {"_target_": "optuna.samplers.CmaEsSampler"},
        "qmc": {"_target_": "optuna.samplers.QMCSampler"},
    }


def _pruners() -> dict[str, Any]:
    # Steps are epochs. Warm-up and startup keep the first epochs and trials from being judged
    # on too little evidence.
    return {
        "none": {"_target_": "optuna.pruners.NopPruner"},
        "median": {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 5,
            "n_warmup_steps": 3,
            "interval_steps": 1,
        },
        "successive_halving": {
            "_target_": "optuna.pruners.SuccessiveHalvingPruner",
            "min_resource": "auto",
            "reduction_factor": 3,
        },
        "hyperband": {
            "_target_": "optuna.pruners.HyperbandPruner",
            "min_resource": 1,
            "max_resource": "auto",
            "reduction_factor": 3,
        },
    }


@dataclass
class PricenetOptunaSweeperConf:
    """``hydra.sweeper``: where the study lives, how many trials it needs, how to pick them."""

    _target_: str = "hydra_plugins.pricenet_optuna_sweeper.sweeper.PricenetOptunaSweeper"
    _recursive_: bool = False  # the presets are built when picked, not with the plugin
    study_name: str = "optuna"
    # null: SQLite in the sweep folder. Else ``journal:<file>`` (a journal file, safe on NFS)
    # or any SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://user@host/db``).
    storage: str | None = None
    direction: Direction = Direction.maximize
    # The total the study should reach: finished trials (and those other live workers are
    # running) count, so a rerun or another worker runs only what is missing.
    n_trials: int = 20
    # Trials asked for and launched at a time by this worker (match the launcher's n_jobs).
    n_jobs: int = 1
    sampler: str = "tpe"
    samplers: dict[str, Any] = field(default_factory=_samplers)
    # With a seed, trial k is sampled with seed + k: one worker repeats its search exactly
    # and workers never draw the same numbers.
    seed: int | None = None
    pruner: str = "median"
    pruners: dict[str, Any] = field(default_factory=_pruners)
    # A worker writes a heartbeat for its running trials every heartbeat_interval seconds. A
    # RUNNING trial without one for grace_period seconds (default 2 x interval) belongs to a
    # killed worker: it is marked FAIL and retried (at most max_retry times) by the next worker.
    heartbeat_interval: float = 30.0
    grace_period: float | None = None
    max_retry: int = 1
    # The search space: ``key: choice(a, b) | range(1, 9) | interval(0, 1) | tag(log, ...)``.
    params: dict[str, str] = field(default_factory=dict)
    # Set by the sweeper on each job (``hydra.sweeper.trial=N``): how a job, in any process,
    # finds its trial to report to. Leave it unset.
    trial: int | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="pricenet_optuna",
    node=PricenetOptunaSweeperConf,
    provider="pricenet",
)
