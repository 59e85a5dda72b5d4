"""Sweeps: the leaderboard every multirun ends with.

The leaderboard is built from the job folders on disk, not from the jobs' return values, so it
is the same for every launcher (jobs of joblib and submitit run in other processes) and it
also covers every trial of an Optuna study, whichever worker or rerun ran it.
Rebuild one by hand (after an interrupted sweep): ``python -m pricenet.sweep <sweep folder>``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pricenet.atomic import atomic_write_text
from pricenet.config.monitor import Monitor
from pricenet.errors import ConfigError, exit_on_user_error, first_line, shown

log = logging.getLogger("pricenet")

ENTRY = "python -m pricenet.train"
# The validation metric that breaks ties of the monitored one (never a test metric).
TIE_BREAK = {"val_acc": "val_loss", "val_loss": "val_acc"}
METRICS = ("val_acc", "val_loss", "test_acc", "test_macro_f1", "best_epoch")
# With cross-validation (or seed repeats) a job reports its fits' summary: the leaderboard
# ranks by the held-out mean and marks the jobs whose interval overlaps the leader's.
SPREAD = ("cv_acc", "cv_std", "cv_low", "cv_high", "tied")
COLUMNS = (
    "rank",
    "job",
    "status",
    *METRICS,
    *SPREAD,
    "epochs_run",
    "wall_time_s",
    "overrides",
    "error",
)
# Done jobs first, then those an Optuna pruner stopped, then failed ones.
STATUS_ORDER = {"done": 0, "pruned": 1}


def _natural(name: str) -> list[Any]:
    """Sort key that puts job ``10`` after job ``9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# A job's log is read from its end; its JSON records are a few KB (a CV record a few hundred).
LOG_TAIL_BYTES = 64 * 1024
MAX_JSON_BYTES = 16 * 1024**2


class _Damaged(Exception):
    """A job file that cannot be read or does not hold what pricenet writes: the job becomes
    a failed row saying why, and the rest of the leaderboard stands."""


def _log_tail(job_dir: Path) -> str:
    """The last error line of the job's log (or its last line): why it never finished."""
    lines = []
    for log_file in sorted(job_dir.glob("*.log")):
        try:
            with log_file.open("rb") as handle:
                handle.seek(max(0, log_file.stat().st_size - LOG_TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    if errors:
        return errors[-1][:500]
    if lines:
        return f"did not finish; its log ends with: {lines[-1][:500]}"
    return "did not finish (no metrics.json, no log)"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A job's JSON record; None when absent; :class:`_Damaged` when unreadable or cut short."""
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise _Damaged(f"{path.name} is larger than {MAX_JSON_BYTES:,} bytes")
        record = json.loads(path.read_bytes())
    except OSError as err:
        raise _Damaged(f"{path.name} cannot be read ({err.strerror or err})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        first = first_line(err)[:200]
        raise _Damaged(f"{path.name} is unreadable ({first}): cut short?") from None
    if not isinstance(record, dict):
        raise _Damaged(f"{path.name} is not a JSON object")
    return record


def _overrides(job_dir: Path) -> list[str]:
    """The job's overrides (Hydra's ``.hydra/overrides.yaml``, a list of strings), read as
    plain data: the leaderboard quotes them and never runs them."""
    from pricenet.stored import load_plain_yaml

    try:
        overrides = load_plain_yaml(job_dir / ".hydra" / "overrides.yaml", "overrides.yaml")
    except ConfigError as err:
        raise _Damaged(str(err)) from None
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise _Damaged("overrides.yaml is not a list of overrides")
    return overrides


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _get(record: dict[str, Any], key: str, name: str, ok: Any = _is_number) -> Any:
    """``record[key]``: None when absent, :class:`_Damaged` when not what ``ok`` accepts."""
    value = record.get(key)
    if value is not None and not ok(value):
        raise _Damaged(f"{name}: {key} is {shown(value)}, not what pricenet writes")
    return value


def _summary(metrics: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The fits' held-out accuracy: mean, std and 95% interval (None each without one)."""
    block = _get(metrics, "cv", "metrics.json", dict) or _get(
        metrics, "seeds", "metrics.json", dict
    )
    summary = _get(block or {}, "acc", "metrics.json cv.acc", dict)
    if not summary:
        return None, None, None, None
    interval = _get(summary, "ci95", "metrics.json cv.acc", lambda v: isinstance(v, list))
    if not (interval and len(interval) == 2 and all(map(_is_number, interval))):
        raise _Damaged("metrics.json: cv.acc.ci95 is not an interval of two numbers")
    mean = _get(summary, "mean", "metrics.json cv.acc")
    std = _get(summary, "std", "metrics.json cv.acc")
    return mean, std, interval[0], interval[1]


def read_job(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One leaderboard row from a job folder: overrides, metrics, wall time, status, error.

    A damaged file (unreadable, cut short, or holding values of the wrong kind) makes the row
    a failed one that says so; it never breaks the leaderboard.
    """
    row: dict[str, Any] = {
        "job": job_dir.relative_to(sweep_dir).as_posix(),
        "overrides": [],
        **dict.fromkeys(METRICS + SPREAD[:4] + ("epochs_run", "wall_time_s")),
        "tied": "",
    }
    try:
        row["overrides"] = _overrides(job_dir)
        metrics = _read_json(job_dir / "metrics.json") or {}
        row["status"] = _get(metrics, "status", "metrics.json", lambda v: isinstance(v, str))
        row["status"] = row["status"] or "failed"
        is_done = row["status"] == "done"
        for key in METRICS:
            row[key] = _get(metrics, key, "metrics.json") if is_done else None
        row["epochs_run"] = _get(metrics, "epochs_run", "metrics.json")
        if is_done:
            row["cv_acc"], row["cv_std"], row["cv_low"], row["cv_high"] = _summary(metrics)
        try:  # run.json is only the wall time: a damaged one leaves the row as it is
            run = _read_json(job_dir / "run.json") or {}
            row["wall_time_s"] = _get(run, "wall_time_s", "run.json")
        except _Damaged:
            pass
        if row["wall_time_s"] is None:
            row["wall_time_s"] = _get(metrics, "wall_time_s", "metrics.json")
        error = _get(metrics, "error", "metrics.json", lambda v: isinstance(v, str))
        row["error"] = "" if is_done else error or _log_tail(job_dir)
    except _Damaged as err:
        row.update(dict.fromkeys(METRICS + SPREAD[:4]), status="failed", error=str(err))
    return row


def _score(row: dict[str, Any], metric: str) -> float:
    """``metric`` oriented so that the better value sorts first; a missing value sorts last."""
    value = row.get(metric)
    if value is None or math.isnan(value):
        return math.inf
    return -Monitor(metric).key(value)


def collect(sweep_dir: Path, monitor: str) -> list[dict[str, Any]]:
    """Every job folder under ``sweep_dir``, best first by ``monitor``; pruned, then failed last."""
    rows = [
        read_job(marker.parent.parent, sweep_dir)
        for marker in sweep_dir.glob("**/.hydra/overrides.yaml")
    ]
    repeated = any(r["cv_acc"] is not None for r in rows)
    rank_by = "cv_acc" if repeated else monitor
    tie = monitor if repeated else TIE_BREAK.get(monitor, monitor)
    rows.sort(
        key=lambda r: (
            STATUS_ORDER.get(r["status"], len(STATUS_ORDER)),
            _score(r, rank_by),
            _score(r, tie),
            _natural(r["job"]),
        )
    )
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    if repeated and rows[0]["cv_low"] is not None:
        _mark_ties(rows)
    return rows


def _mark_ties(rows: list[dict[str, Any]]) -> None:
    """``tied`` for every job whose 95% interval overlaps the leader's: within noise of it."""
    leader = rows[0]
    leader["tied"] = "leader"
    for row in rows[1:]:
        if row["cv_high"] is not None and row["cv_high"] >= leader["cv_low"]:
            row["tied"] = "tied within noise"


def reproduce_command(overrides: list[str]) -> str:
    """The shell command that trains the job with these overrides again."""
    return " ".join([ENTRY, *map(shlex.quote, overrides)])


def _short(override: str) -> str:
    """``optim.lr=0.0017538232373118048`` as ``optim.lr=0.001754``: for reading, not rerunning."""
    return re.sub(r"(?<==)-?\d+\.\d{5,}(?:e-?\d+)?$", lambda m: f"{float(m.group()):.4g}", override)


def _cell(value: Any) -> str:
    """A metric as the Markdown table shows it."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _markdown(rows: list[dict[str, Any]], monitor: str, sweep_dir: Path) -> str:
    """The leaderboard as a Markdown table; overrides shared by every job are listed once."""
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    done = sum(r["status"] == "done" for r in rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    order = "higher" if Monitor(monitor).higher_is_better else "lower"
    counts = f"{done} done, {pruned} pruned, " if pruned else f"{done} done, "
    repeated = any(r["cv_acc"] is not None for r in rows)
    ranked = (
        "sorted by the mean accuracy of each job's fits on rows they never saw (cv_acc; "
        "jobs whose 95% interval overlaps the leader's are tied within noise)"
        if repeated
        else f"sorted by {monitor} ({order} is better; test metrics are reported, never used "
        "to rank)"
    )
    lines = [
        f"# Leaderboard: {sweep_dir}",
        "",
        f"{len(rows)} jobs ({counts}{len(rows) - done - pruned} failed), {ranked}.",
    ]
    if common:
        shared = " ".join(o for o in rows[0]["overrides"] if o in common)
        lines.append(f"Overrides common to every job: `{shared}`")
    columns = [c for c in COLUMNS if repeated or c not in SPREAD]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = {
            **{key: _cell(row[key]) for key in METRICS + ("rank", "job", "status", "epochs_run")},
            **{key: _cell(row[key]) for key in SPREAD},
            "overrides": " ".join(_short(o) for o in row["overrides"] if o not in common),
            "wall_time_s": "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.1f}",
            "error": row["error"].replace("\n", " ")[:160],
        }
        lines.append("| " + " | ".join(cells[k].replace("|", "\\|") for k in columns) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(sweep_dir: str | Path, monitor: str = "val_acc") -> list[dict[str, Any]]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``best.yaml`` into ``sweep_dir``.

    The CSV's text cells (job, status, overrides, error) that a spreadsheet would run as a
    formula get a leading ``'``, as ``pricenet.predict``'s output does
    (:func:`pricenet.tables.cells.escape_formula`); ``best.yaml`` keeps the overrides as run.
    """
    from pricenet.tables.cells import escape_formula  # numpy, torch: only when writing

    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir, monitor)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        cells = {**row, "overrides": " ".join(row["overrides"])}
        writer.writerow({key: escape_formula(value) for key, value in cells.items()})
    # Atomic: several workers of one Optuna study may finish at the same moment.
    _write(sweep_dir / "leaderboard.csv", table.getvalue())
    _write(sweep_dir / "leaderboard.md", _markdown(rows, monitor, sweep_dir))
    if rows and rows[0]["status"] == "done":
        best = rows[0]
        record = {
            "command": reproduce_command(best["overrides"]),
            "overrides": best["overrides"],
            "job_dir": str((sweep_dir / best["job"]).resolve()),
            "monitor": monitor,
            **{key: best[key] for key in METRICS + SPREAD[:4] if best[key] is not None},
        }
        text = yaml.safe_dump(record, sort_keys=False, width=1000)
        _write(
            sweep_dir / "best.yaml",
            f"# The best job by {monitor}; rerun it with:\n#   {record['command']}\n{text}",
        )
    return rows


def _write(path: Path, text: str) -> None:
    """Write a leaderboard file atomically; a folder that cannot take it is one line."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the leaderboard ({err.strerror or err})") from None


def check_sweep_dir(sweep_dir: Path) -> None:
    """Create ``sweep_dir`` and make sure files can be written in it, before any job runs
    (permission bits are not enough: root may write where they say no, a read-only mount
    says yes)."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: is not a folder")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".pricenet-probe-", dir=sweep_dir):
            pass
    except OSError as err:
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir}: cannot write there ({err.strerror or err})"
        ) from None


class Leaderboard(Callback):
    """Hydra callback: when a multirun ends, rank its jobs into the sweep folder."""

    @exit_on_user_error
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the sweep folder (Optuna's SQLite storage lives there) and check direction."""
        check_sweep_dir(Path(config.hydra.sweep.dir))
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        direction = getattr(direction, "name", direction)  # an Enum in pricenet's sweeper
        if isinstance(direction, str):
            monitor = Monitor(config.monitor)
            if direction != monitor.direction:
                log.warning(
                    "hydra.sweeper.direction=%s but monitor=%s is better %s: set "
                    "hydra.sweeper.direction=%s",
                    direction,
                    config.monitor,
                    "higher" if monitor.higher_is_better else "lower",
                    monitor.direction,
                )

    @exit_on_user_error
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the leaderboard files and name the winner; exit 1 if every job failed."""
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_leaderboard(sweep_dir, config.monitor)
        done = [r for r in rows if r["status"] == "done"]
        failed = [r for r in rows if r["status"] not in STATUS_ORDER]
        log.info(
            "leaderboard: %s (%d jobs, %d failed)",
            sweep_dir / "leaderboard.md",
            len(rows),
            len(failed),
        )
        if done:
            log.info(
                "best %s=%.4f (job %s): %s",
                config.monitor,
                done[0][config.monitor],
                done[0]["job"],
                reproduce_command(done[0]["overrides"]),
            )
        elif rows and len(failed) == len(rows):
            print(
                f"error: all {len(rows)} jobs failed (first error: {failed[0]['error'][:200]}); "
                f"see {sweep_dir / 'leaderboard.md'}",
                file=sys.stderr,
            )
            sys.exit(1)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """``python -m pricenet.sweep <sweep folder> [--monitor val_acc]``: rebuild a leaderboard."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--monitor", default="val_acc", choices=sorted(TIE_BREAK))
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir}: not a folder")
    rows = write_leaderboard(args.sweep_dir, args.monitor)
    print((args.sweep_dir / "leaderboard.md").read_text() if rows else "no job folders found")


if __name__ == "__main__":
    main()
