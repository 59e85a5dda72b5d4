"""Sweeps: the leaderboard every multirun ends with, and Optuna's view of a failed job.

The leaderboard is built from the job folders on disk, not from the jobs' return values, so it
is the same for every launcher (jobs of joblib and submitit run in other processes) and it
also covers the earlier jobs of a resumed Optuna study that share the sweep folder.
Rebuild one by hand (after an interrupted sweep): ``python -m pricenet.sweep <sweep folder>``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("pricenet")

ENTRY = "python -m pricenet.train"
LOWER_IS_BETTER = frozenset({"val_loss"})
# The validation metric that breaks ties of the monitored one (never a test metric).
TIE_BREAK = {"val_acc": "val_loss", "val_loss": "val_acc"}
METRICS = ("val_acc", "val_loss", "test_acc", "test_macro_f1", "best_epoch")
COLUMNS = ("rank", "job", "status", *METRICS, "wall_time_s", "overrides", "error")


class JobFailed(RuntimeError):
    """A job that finished without a metric: recorded as failed, not as a value."""


def _natural(name: str) -> list[Any]:
    """Sort key that puts job ``10`` after job ``9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _log_tail(job_dir: Path) -> str:
    """The last error line of the job's log (or its last line): why it never finished."""
    lines = [
        line.strip()
        for log_file in sorted(job_dir.glob("*.log"))
        for line in log_file.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    errors = [line for line in lines if "ERROR" in line]
    if errors:
        return errors[-1]
    if lines:
        return f"did not finish; its log ends with: {lines[-1]}"
    return "did not finish (no metrics.json, no log)"


def read_job(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One leaderboard row from a job folder: overrides, metrics, wall time, status, error."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {"job": job_dir.relative_to(sweep_dir).as_posix(), "overrides": overrides}
    metrics_file = job_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    row["status"] = metrics.get("status", "failed")
    for key in METRICS:
        row[key] = metrics.get(key) if row["status"] == "done" else None
    run_file = job_dir / "run.json"
    row["wall_time_s"] = (
        json.loads(run_file.read_text()).get("wall_time_s") if run_file.is_file() else None
    )
    row["error"] = "" if row["status"] == "done" else metrics.get("error") or _log_tail(job_dir)
    return row


def _score(row: dict[str, Any], metric: str) -> float:
    """``metric`` oriented so that lower sorts first; a missing value sorts last."""
    value = row.get(metric)
    if value is None or math.isnan(value):
        return math.inf
    return value if metric in LOWER_IS_BETTER else -value


def collect(sweep_dir: Path, monitor: str) -> list[dict[str, Any]]:
    """Every job folder under ``sweep_dir``, best first by ``monitor``; failed jobs last."""
    rows = [
        read_job(marker.parent.parent, sweep_dir)
        for marker in sweep_dir.glob("**/.hydra/overrides.yaml")
    ]
    tie = TIE_BREAK.get(monitor, monitor)
    rows.sort(
        key=lambda r: (
            r["status"] != "done",
            _score(r, monitor),
            _score(r, tie),
            _natural(r["job"]),
        )
    )
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


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
    order = "lower" if monitor in LOWER_IS_BETTER else "higher"
    lines = [
        f"# Leaderboard: {sweep_dir}",
        "",
        f"{len(rows)} jobs ({done} done, {len(rows) - done} failed), sorted by {monitor} "
        f"({order} is better; test metrics are reported, never used to rank).",
    ]
    if common:
        shared = " ".join(o for o in rows[0]["overrides"] if o in common)
        lines.append(f"Overrides common to every job: `{shared}`")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = {
            **{key: _cell(row[key]) for key in METRICS + ("rank", "job", "status")},
            "overrides": " ".join(_short(o) for o in row["overrides"] if o not in common),
            "wall_time_s": "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.1f}",
            "error": row["error"].replace("\n", " ")[:160],
        }
        lines.append("| " + " | ".join(cells[k].replace("|", "\\|") for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(sweep_dir: str | Path, monitor: str = "val_acc") -> list[dict[str, Any]]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``best.yaml`` into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir, monitor)
    with (sweep_dir / "leaderboard.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "overrides": " ".join(row["overrides"])})
    (sweep_dir / "leaderboard.md").write_text(_markdown(rows, monitor, sweep_dir))
    if rows and rows[0]["status"] == "done":
        best = rows[0]
        record = {
            "command": reproduce_command(best["overrides"]),
            "overrides": best["overrides"],
            "job_dir": str((sweep_dir / best["job"]).resolve()),
            "monitor": monitor,
            **{key: best[key] for key in METRICS},
        }
        text = yaml.safe_dump(record, sort_keys=False, width=1000)
        (sweep_dir / "best.yaml").write_text(
            f"# The best job by {monitor}; rerun it with:\n#   {record['command']}\n{text}"
        )
    return rows


class Leaderboard(Callback):
    """Hydra callback: when a multirun ends, rank its jobs into the sweep folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the sweep folder (Optuna's SQLite storage lives there) and check direction."""
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        if isinstance(direction, str):
            wanted = "minimize" if config.monitor in LOWER_IS_BETTER else "maximize"
            if direction != wanted:
                log.warning(
                    "hydra.sweeper.direction=%s but monitor=%s is better %s: set "
                    "hydra.sweeper.direction=%s",
                    direction,
                    config.monitor,
                    "lower" if wanted == "minimize" else "higher",
                    wanted,
                )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the leaderboard files and name the winner."""
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_leaderboard(sweep_dir, config.monitor)
        done = [r for r in rows if r["status"] == "done"]
        log.info(
            "leaderboard: %s (%d jobs, %d failed)",
            sweep_dir / "leaderboard.md",
            len(rows),
            len(rows) - len(done),
        )
        if done:
            log.info(
                "best %s=%.4f (job %s): %s",
                config.monitor,
                done[0][config.monitor],
                done[0]["job"],
                reproduce_command(done[0]["overrides"]),
            )


class FailOnNaN(Callback):
    """Hydra callback for Optuna searches: a job that returned NaN becomes a failed job.

    ``run_job`` returns NaN for a failed job so that grid sweeps go on; hydra-optuna-sweeper
    1.3 aborts the whole study on a NaN value (hydra issue 2237) but records a failed job as a
    FAIL trial and goes on (with ``max_failure_rate: 1.0``).
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Mark a NaN result failed, with the error the job recorded in ``metrics.json``."""
        if job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and math.isnan(value):
            metrics_file = Path(config.hydra.runtime.output_dir) / "metrics.json"
            error = (
                json.loads(metrics_file.read_text()).get("error")
                if metrics_file.is_file()
                else None
            )
            job_return.status = JobStatus.FAILED
            job_return.return_value = JobFailed(error or "the job returned no metric")


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
