"""Determinism and no lost work: the same command twice gives two folders, identical metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from pricenet.config.seed import set_seed

ARGS = [
    "trainer.deterministic=true",
    "trainer.device=cpu",
    "trainer.epochs=3",
    "data.n_rows=200",
    "model.dropout=0.3",
    "report.tensorboard=false",
    "report.plots=false",
    "report.progress=none",
    "trainer.threads=1",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    """The same command run twice in one project folder: the run folders, oldest first."""
    root = tmp_path_factory.mktemp("project")
    for _ in range(2):
        result = run_cli(*ARGS, cwd=root)
        assert result.returncode == 0, result.stderr[-2000:]
    return sorted((root / "outputs" / "runs").iterdir())


@pytest.mark.slow
def test_two_deterministic_cpu_runs_write_identical_metrics(two_runs):
    first, second = (run / "metrics.json" for run in two_runs)
    assert first.read_text() == second.read_text()
    metrics = json.loads(first.read_text())
    assert metrics["status"] == "done" and metrics["epochs_run"] == 3
    # wall-clock times live in run.json, never in metrics.json
    assert not any("time" in key for key in metrics)
    assert "wall_time_s" in json.loads((two_runs[0] / "run.json").read_text())


@pytest.mark.slow
def test_a_rerun_gets_its_own_folder(two_runs):
    assert len(two_runs) == 2 and two_runs[0] != two_runs[1]
    for run in two_runs:
        assert {"metrics.json", "best.pt", "last.pt", "config.yaml"} <= {
            p.name for p in run.iterdir()
        }


def test_deterministic_mode_is_switched_both_ways():
    was = torch.are_deterministic_algorithms_enabled()
    try:
        set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        set_seed(0, deterministic=False)  # one run's choice never leaks into the next
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was)
