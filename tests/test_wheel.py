"""The installed tool: a wheel built from the checkout works from any folder, configs included.

Slow (a fresh venv installs torch and every dependency, pinned by constraints.txt: about three
minutes on two cores), so it runs with the slow tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT

from pricenet.tables import make_synthetic

pytestmark = pytest.mark.slow


def sh(*args: str | Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command with an environment that knows nothing of the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PRICENET_ROOT")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel built from a copy of the checkout (the checkout stays untouched)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__")
    for name in ("src", "conf"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    python = sys.executable
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", source]
    sh(python, "-m", "pip", *build, cwd=root)
    (wheel,) = (root / "dist").glob("pricenet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert {"pricenet/conf/config.yaml", "pricenet/conf/optim/adam.yaml"} <= set(
            archive.namelist()
        )
    sh(python, "-m", "venv", "venv", cwd=root)
    pip = root / "venv" / "bin" / "pip"
    sh(pip, "install", "-q", "torch==2.13.0", cwd=root)
    sh(pip, "install", "-q", wheel, "-c", REPO_ROOT / "constraints.txt", cwd=root)
    return root / "venv" / "bin"


def test_console_scripts_train_and_predict_from_any_folder(installed, tmp_path):
    where = sh(
        installed / "python", "-c", "import pricenet; print(pricenet.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(installed.parent))

    sh(installed / "pricenet-train", "trainer.epochs=2", "trainer.device=cpu", cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["epochs_run"] == 2
    for name in (
        "best.pt",
        "summary.txt",
        "curves.png",
        "tensorboard/trainer.device=cpu,trainer.epochs=2",
    ):
        assert (run_dir / name).exists(), name

    make_synthetic(25, seed=9).to_frame().to_csv(tmp_path / "phones.csv", index=False)
    result = sh(
        installed / "pricenet-predict",
        f"checkpoint={run_dir}",
        "input=phones.csv",
        "output=predictions.csv",
        cwd=tmp_path,
    )
    assert "accuracy" in result.stdout
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 25

    sh(installed / "pricenet-explain", "ema", "out_dir=figures", cwd=tmp_path)
    assert (tmp_path / "figures" / "ema.png").is_file()
