"""Callbacks come from the ``callbacks`` config group: dropped, added, and given to every fit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pricenet.checkpoints.checkpoint import LAST, load_checkpoint
from pricenet.errors import ConfigError
from pricenet.run.pipeline import run

LEAN = ("report.plots=false", "report.progress=none", "trainer.device=cpu")


class Marker:
    """A user's callback: writes the epochs it saw into the run folder."""

    def __init__(self, run, file: str = "marker.txt") -> None:
        self.path = Path(run.run_dir) / file
        self.epochs: list[int] = []

    def on_epoch_end(self, trainer) -> None:
        self.epochs.append(trainer.state.epoch)

    def on_fit_end(self, trainer) -> None:
        self.path.write_text(" ".join(map(str, self.epochs)))


def test_a_callback_dropped_by_config_is_absent(compose_cfg, tmp_path):
    cfg = compose_cfg("trainer.epochs=2", "~callbacks.tensorboard", "callbacks.csv=null", *LEAN)
    assert "tensorboard" not in cfg.callbacks
    run(cfg, tmp_path / "run")
    made = {p.name for p in (tmp_path / "run").iterdir()}
    assert "tensorboard" not in made and "metrics.csv" not in made
    assert LAST in made  # the others still run
    # the default run writes both (what dropping them took away)
    run(compose_cfg("trainer.epochs=2", *LEAN), tmp_path / "default")
    assert {"tensorboard", "metrics.csv"} <= {p.name for p in (tmp_path / "default").iterdir()}


def test_a_callback_added_by_config_runs(compose_cfg, tmp_path):
    mine = "+callbacks.mine={_target_: test_callbacks.Marker, _partial_: true, file: seen.txt}"
    run(compose_cfg("trainer.epochs=3", "trainer.patience=null", mine, *LEAN), tmp_path / "run")
    assert (tmp_path / "run" / "seen.txt").read_text() == "1 2 3"
    settings = load_checkpoint(tmp_path / "run" / LAST)["settings"]
    assert not [k for k in settings if k.startswith("callbacks")]  # never stored as code


def test_a_callback_without_hooks_is_one_error(compose_cfg, tmp_path):
    cfg = compose_cfg("+callbacks.bad={_target_: builtins.dict}", *LEAN)
    with pytest.raises(ConfigError, match=r"^callbacks.bad \(dict\) has none of the hooks"):
        run(cfg, tmp_path / "run")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_sequential_fallback_cv_run_writes_metrics_csv_and_last_pt_and_resumes(
    compose_cfg, tmp_path
):
    """L-BFGS fits members one by one: they get the run's callbacks all the same (before, no
    metrics.csv and no last.pt), and the run resumes to what an uninterrupted one gives."""
    common = ("experiment=recommended", "cv=kfold", "cv.folds=3", "data.n_rows=300", *LEAN)
    full, _ = run(compose_cfg(*common, "trainer.epochs=4"), tmp_path / "full")
    run(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "first")
    first = tmp_path / "first"
    assert [r["epoch"] for r in _rows(first / "metrics.csv")] == ["1", "2"]
    saved = load_checkpoint(first / LAST)
    assert saved["epoch"] == 2 and len(saved["trainer"]["trainers"]) == 3
    resume = f"trainer.resume={first}"
    resumed, _ = run(compose_cfg(*common, "trainer.epochs=4", resume), tmp_path / "second")
    assert resumed == full
    assert _rows(tmp_path / "second" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
