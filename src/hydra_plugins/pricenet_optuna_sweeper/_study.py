"""The study that every worker and every job shares: storage, presets, budget, heartbeats.

Used by the sweeper (to ask and tell) and by jobs in any process (to report each epoch and ask
whether to stop): both open the study from ``hydra.sweeper`` and the sweep folder alone.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

JOURNAL = "journal:"
HEARTBEAT = "pricenet:heartbeat"  # system attr: when a worker last vouched for a running trial
RETRY_OF = "retry_of"  # user attr of a retry: the number of the trial whose worker died
RETRIES = "retries"  # user attr: how many times this trial's parameters were retried
SQLITE_TIMEOUT_S = 60  # workers sharing one SQLite file wait this long for its lock
SCHEMA_ATTEMPTS = 5  # tries to open a new database that other workers are creating too
RECONNECT_S = 120.0  # how long a worker retries a database server that went away


class SweepConfigError(ValueError):
    """A ``hydra.sweeper`` value that cannot work: reported as one ``error:`` line."""


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """``hydra.sweeper.storage``, with null meaning SQLite in the sweep folder."""
    if storage is None:
        return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"
    return str(storage)


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: fit for logs and errors."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not parseable: blank whatever sits in user:pass@
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _one_line(err: object, url: str) -> str:
    """A driver's message on one line, the URL's password blanked if the driver echoed it."""
    text = " ".join(str(err).split())
    password = re.search(r"://[^:/@]*:([^@]*)@", url)
    return text.replace(password.group(1), "***") if password and password.group(1) else text


@functools.cache
def open_storage(url: str) -> BaseStorage:
    """The storage behind ``url``, one per process: a journal file or an SQLAlchemy database.

    ``journal:<path>`` (``journal:///abs/study.log`` too) is Optuna's JournalFileBackend, which
    locks with a symlink and so works on NFS; anything else is an SQLAlchemy URL. A database
    server (not SQLite) may go away and come back: its connections are checked before use and
    every storage call retries a lost connection for :data:`RECONNECT_S` seconds.
    """
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL).removeprefix("//")).expanduser()
        if not path.name:
            raise SweepConfigError(f"hydra.sweeper.storage={url}: no journal file named")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = url.startswith("sqlite:")
    engine_kwargs: dict[str, Any] = {} if sqlite else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    from sqlalchemy.exc import ArgumentError, DBAPIError

    where = f"hydra.sweeper.storage={redact(url)}"
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs)
            if sqlite:
                _use_wal(storage.engine)
            else:
                _reconnecting(storage)
            return storage
        except (ImportError, ValueError, ArgumentError) as err:  # malformed, unknown, no driver
            raise SweepConfigError(
                f"{where}: {_one_line(err, url)} (expected journal:<file>, sqlite:///<file> or "
                "another SQLAlchemy URL, e.g. postgresql://user:password@host:port/database)"
            ) from err
        except DBAPIError as err:
            # Workers that start together race to create the schema: the losers find it made.
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise SweepConfigError(f"{where}: {_one_line(err.orig, url)}") from err
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _lost_connection(err: BaseException) -> bool:
    """Whether ``err`` is a refused or dropped database connection, worth retrying."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    cause = err.__cause__ if isinstance(err, StorageInternalError) else err
    return isinstance(cause, OperationalError) or (
        isinstance(cause, DBAPIError) and cause.connection_invalidated
    )


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, retried with backoff while the database server is unreachable."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        delay, deadline = 0.25, time.monotonic() + RECONNECT_S
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as err:
                if not _lost_connection(err) or time.monotonic() > deadline:
                    raise
                reason = " ".join(str(err.__cause__ or err).split())[:200]
                log.warning("database unreachable (%s); retrying in %.2f s", reason, delay)
                time.sleep(delay)
                delay = min(2 * delay, 4.0)

    return call


def _reconnecting(storage: RDBStorage) -> None:
    """Make every storage call of ``storage`` survive a database restart (see :func:`_retried`).

    A call that fails on a dead connection is retried on a fresh one (``pool_pre_ping`` drops
    the dead ones); a query that cannot succeed (a bad value) is not, it fails at once.
    """
    for name in dir(BaseStorage):
        if not name.startswith("_") and callable(getattr(storage, name)):
            setattr(storage, name, _retried(getattr(storage, name)))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(engine: Any) -> None:
    """SQLite in WAL mode: readers do not block the writer and a commit needs no full sync.

    Every job reports each epoch, so this matters: a report plus a pruning check costs ~3 ms
    instead of ~23 ms, and workers wait less for the lock. WAL needs a local disk: on NFS use
    a journal.
    """
    from sqlalchemy import event

    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()  # connections opened before the listener reopen with the pragmas


def direction(cfg: DictConfig) -> str:
    """``minimize`` or ``maximize``."""
    value = cfg.direction
    return value.name if isinstance(value, Enum) else str(value)


def _preset(cfg: DictConfig, kind: str) -> DictConfig:
    choice = cfg[kind]
    presets = cfg[f"{kind}s"]
    if choice not in presets:
        raise SweepConfigError(
            f"hydra.sweeper.{kind}={choice}: unknown; choose one of {', '.join(presets)} "
            f"(or define hydra.sweeper.{kind}s.{choice} with a _target_)"
        )
    return presets[choice]


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner ``hydra.sweeper.pruner`` names."""
    return instantiate(_preset(cfg, "pruner"))


def make_sampler(cfg: DictConfig, trial_number: int) -> optuna.samplers.BaseSampler:
    """The sampler ``hydra.sweeper.sampler`` names, seeded ``seed + trial_number`` if seeded."""
    seed = {} if cfg.seed is None else {"seed": cfg.seed + trial_number}
    return instantiate(_preset(cfg, "sampler"), **seed)


def open_study(cfg: DictConfig, sweep_dir: str | Path, *, create: bool) -> optuna.Study:
    """The study ``hydra.sweeper`` names, with its pruner; created first if ``create``."""
    storage = open_storage(storage_url(cfg.storage, sweep_dir))
    pruner = make_pruner(cfg)
    if not create:
        sampler = optuna.samplers.RandomSampler()  # a job reports, it never samples
        return optuna.load_study(
            study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner
        )
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.study_name,
        direction=direction(cfg),
        pruner=pruner,
        sampler=make_sampler(cfg, 0),
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction(cfg):
        raise SweepConfigError(
            f"hydra.sweeper.direction={direction(cfg)}, but study '{cfg.study_name}' in "
            f"{redact(storage_url(cfg.storage, sweep_dir))} was created to "
            f"{study.direction.name.lower()}: use another hydra.sweeper.study_name"
        )
    return study


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage id of trial ``number`` of ``study``."""
    storage = open_storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )


def open_storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes through (Optuna caches an RDB storage)."""
    return study._storage  # noqa: SLF001 (Optuna has no public accessor)


def open_trial(cfg: DictConfig, sweep_dir: str | Path) -> optuna.Trial:
    """A job's handle on its own trial, ``hydra.sweeper.trial``, from any process."""
    study = open_study(cfg, sweep_dir, create=False)
    return optuna.Trial(study, trial_id(study, cfg.trial))


# ------------------------------------------------------------------------------ the budget


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards ``n_trials``.

    Finished ones (COMPLETE, PRUNED, FAIL) and RUNNING ones (a live worker will finish them:
    a dead worker's are failed by :func:`fail_stale` first). A FAIL trial that was retried does
    not count, its retry does once it runs; a WAITING trial does not count until it runs.
    """
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and t.number not in retried)
    ]


def missing(trials: Sequence[FrozenTrial], n_trials: int) -> int:
    """How many more trials the study needs to reach ``n_trials``."""
    return max(0, n_trials - len(counted(trials)))


def surplus(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial ``number`` came past the total: the first ``n_trials`` by number win.

    Two workers that both saw one trial missing ask two; trial numbers are unique, so exactly
    one of them sees ``n_trials`` counted trials below its own and gives its trial back.
    """
    return sum(t.number < number for t in counted(trials)) >= n_trials


def give_back(study: optuna.Study, number: int) -> None:
    """Return a just-asked, still unsampled trial to the queue (WAITING) for a later top-up."""
    open_storage_of(study).set_trial_state_values(trial_id(study, number), TrialState.WAITING)


# ------------------------------------------------------------------- workers that die


def fail_and_retry(study: optuna.Study, trial: FrozenTrial, reason: str, max_retry: int) -> bool:
    """Mark a trial whose worker stopped FAIL, and queue its parameters again (``max_retry``).

    Returns False when another worker got there first (the trial had already finished).
    """
    try:
        open_storage_of(study).set_trial_user_attr(trial_id(study, trial.number), "error", reason)
        study.tell(trial.number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # finished meanwhile, or failed by another worker
        return False
    retries = int(trial.user_attrs.get(RETRIES, 0))
    if retries < max_retry:
        study.enqueue_trial(
            dict(trial.params), user_attrs={RETRY_OF: trial.number, RETRIES: retries + 1}
        )
        log.warning("trial %d: %s; its parameters are queued again", trial.number, reason)
    else:
        log.warning("trial %d: %s; not retried (max_retry=%d)", trial.number, reason, max_retry)
    return True


def last_alive(trial: FrozenTrial) -> float:
    """When a worker last showed that it was running ``trial`` (seconds since the epoch)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return max(float(trial.system_attrs.get(HEARTBEAT, 0.0)), started)


def fail_stale(study: optuna.Study, grace_period: float, max_retry: int) -> list[int]:
    """Fail (and retry) every RUNNING trial with no heartbeat for ``grace_period`` seconds."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_alive(trial)
        if silent > grace_period:
            reason = f"its worker sent no heartbeat for {silent:.0f} s (killed?)"
            if fail_and_retry(study, trial, reason, max_retry):
                failed.append(trial.number)
    return failed


class Heartbeat:
    """While open, stamps the given trials every ``interval`` seconds from a daemon thread."""

    def __init__(self, study: optuna.Study, numbers: Sequence[int], interval: float) -> None:
        self.storage = open_storage_of(study)
        self.ids = [trial_id(study, n) for n in numbers]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def beat(self) -> None:
        """Stamp every trial that is still running."""
        for tid in self.ids:
            try:
                self.storage.set_trial_system_attr(tid, HEARTBEAT, time.time())
            except RuntimeError:  # finished meanwhile: nothing to vouch for
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as err:  # a busy database must not end the heartbeats
                log.warning("heartbeat not written: %s", err)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
