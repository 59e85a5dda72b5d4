"""Shared fixtures: compose configs with Hydra's compose API, shrink them, write under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import pricenet.config.config  # noqa: F401  (registers the schemas)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = Path(
    os.environ.get("PRICENET_SHARED_CSV", REPO_ROOT.parent / "shared" / "data" / "mobile_price.csv")
)
# The slowest in-process tests, each covered in kind by a faster one, are marked slow here, so
# the fast tier (`make test-fast`: `pytest -m "not slow"`) leaves them out; `make test` (CI)
# still runs them. "file::test" marks every parametrization, "file::test[id]" only that one.
SLOW_IN_PROCESS = frozenset(
    {
        "test_real_data.py::test_recommended_reaches_96_percent_and_the_tutorial_fails",
        "test_explain.py::test_every_figure_is_a_valid_png",
        "test_data_validation.py::test_random_malformed_csv_raises_only_data_error",
        "test_resume.py::test_resumed_run_equals_uninterrupted_run[plateau-dropout-rrelu]",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests named in :data:`SLOW_IN_PROCESS` slow."""
    for item in items:
        test_id = item.nodeid.rsplit("/", 1)[-1]
        if test_id in SLOW_IN_PROCESS or test_id.split("[", 1)[0] in SLOW_IN_PROCESS:
            item.add_marker(pytest.mark.slow)


# Small and fast: what every "does this choice train" test runs on.
SHRINK = ["trainer.epochs=2", "data.n_rows=200", "trainer.batch_size=32", "trainer.device=cpu"]


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg(*overrides, shrink=True)`` -> the composed config; clears Hydra afterwards."""
    GlobalHydra.instance().clear()

    def _compose(*overrides: str, shrink: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_module("pricenet.conf", version_base="1.3"):
            shrink_to = [
                s
                for s in SHRINK
                if shrink and not (s.startswith("data.") and "data=csv" in overrides)
            ]
            return compose("config", overrides=[*shrink_to, *overrides])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def real_csv() -> Path:
    """The shared real data; tests using it skip cleanly when it is absent."""
    if not SHARED_CSV.is_file():
        pytest.skip(f"{SHARED_CSV} not present")
    return SHARED_CSV


def run_cli(*args: str, cwd: Path, module: str = "pricenet.train", timeout: int = 600, env=None):
    """Run ``python -m <module> args`` in ``cwd`` and return the CompletedProcess."""
    full_env = {**os.environ, "PRICENET_ROOT": str(cwd), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The servers scripts/cluster/cluster.sh starts (CI runs it before `make test`): what it recorded.
CLUSTER_STATE = Path(os.environ.get("PRICENET_CLUSTER_DIR", "/tmp/pricenet-cluster")) / "state"


def cluster_state() -> dict[str, str]:
    """``key=value`` lines of the state file; empty when the script never ran."""
    if not CLUSTER_STATE.is_file():
        return {}
    lines = CLUSTER_STATE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front which of the cluster and postgres tests can run, and why not."""
    state = cluster_state()
    return "; ".join(
        f"{name} tests: {'run' if state.get(name) == 'up' else 'skip, ' + _why_not(name, state)}"
        for name in ("slurm", "postgres")
    )


def _why_not(name: str, state: dict[str, str]) -> str:
    default = f"not recorded in {CLUSTER_STATE} (start it: scripts/cluster/cluster.sh up)"
    return state.get(name, default)


def _service(name: str) -> dict[str, str]:
    state = cluster_state()
    if state.get(name) != "up":
        pytest.skip(f"{name} is not up: {_why_not(name, state)}")
    return state


@pytest.fixture
def slurm_cluster() -> dict[str, str]:
    """The one-node SLURM cluster; skips, saying why, when it is not up."""
    return _service("slurm")


@pytest.fixture
def postgres() -> dict[str, str]:
    """The PostgreSQL server (``postgres_url``, ``postgres_restart``); skips when it is not up."""
    return _service("postgres")
