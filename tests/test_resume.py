"""Resume: a run continued from last.pt ends exactly where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from pricenet.checkpoints.checkpoint import load_checkpoint
from pricenet.errors import CheckpointError
from pricenet.run.pipeline import run

# No reports (another issue's business), and one thread: faster for tensors this small.
LEAN = (
    "report.tensorboard=false",
    "report.plots=false",
    "report.progress=none",
    "trainer.threads=1",
)
EXACT = ("trainer.deterministic=true", "data.n_rows=160", "trainer.batch_size=16", *LEAN)

# Each case uses state that a sloppy resume loses: dropout and RReLU draw from torch's RNG,
# the schedulers keep counters, early stopping keeps its patience count.
CASES = {
    "plateau-dropout-rrelu": [
        "scheduler=plateau",
        "scheduler.patience=1",
        "model.dropout=0.3",
        "activation=rrelu",
        "model.batch_norm=true",
        "optim=sgd",
    ],
    "cv-packed": ["cv=kfold", "cv.folds=3", "model.dropout=0.3", "optim=adam", "trainer.seeds=2"],
    "multistep-early-stop": [  # stops early at epoch 8 (best: 6), after the resume at 4
        "scheduler=multistep",
        "scheduler.milestones=[2,4]",
        "model.dropout=0.2",
        "trainer.patience=2",
        "monitor=val_loss",
        "optim.lr=0.05",
    ],
}


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_resumed_run_equals_uninterrupted_run(compose_cfg, tmp_path, extra):
    full, _ = run(compose_cfg(*EXACT, *extra, "trainer.epochs=10"), tmp_path / "full")
    _, first = run(compose_cfg(*EXACT, *extra, "trainer.epochs=4"), tmp_path / "first")
    first_last = first["last.pt"].read_bytes()
    resume = f"trainer.resume={tmp_path / 'first'}"
    resumed, artifacts = run(
        compose_cfg(*EXACT, *extra, "trainer.epochs=10", resume), tmp_path / "resumed"
    )

    assert full["epochs_run"] > 4  # training really goes on after the resume point
    assert resumed == full
    for name in ("metrics.json", "metrics.csv"):  # metrics.csv is rewritten whole on resume
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "full" / name).read_text()
    # the new folder holds both checkpoints; the old run's folder is untouched
    members = full.get("members")
    best = [m["best_epoch"] for m in members] if members else full["best_epoch"]
    assert load_checkpoint(artifacts["best.pt"])["epoch"] == best
    assert load_checkpoint(artifacts["last.pt"])["epoch"] == full["epochs_run"]
    assert first["last.pt"].read_bytes() == first_last


def test_resume_with_other_settings_names_the_keys(compose_cfg, tmp_path):
    run(compose_cfg(*LEAN, "trainer.epochs=1", "data.n_rows=120"), tmp_path / "first")
    resume = f"trainer.resume={tmp_path / 'first'}"
    cfg = compose_cfg(*LEAN, "trainer.epochs=2", "data.n_rows=120", "optim=sgd", resume)
    with pytest.raises(CheckpointError) as caught:
        run(cfg, tmp_path / "second")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'first' / 'last.pt'}: was trained with other settings")
    assert "optim._target_ ('torch.optim.Adam' there, 'torch.optim.SGD' here)" in message
    assert not (tmp_path / "second").exists()


# A driver that runs the real CLI, stops itself in the middle of epoch KILL_AT + 1 (after
# a weight update that no checkpoint holds) and waits there for the test's SIGKILL.
DRIVER = """
import os, signal, sys
from pathlib import Path

import pricenet.engine.callbacks as checkpoint
from pricenet.train import main

KILL_AT, MARKER = int(sys.argv.pop(1)), Path(sys.argv.pop(1))
write_checkpoints = checkpoint.Checkpointer.on_epoch_end


def on_epoch_end(self, trainer):
    write_checkpoints(self, trainer)
    if trainer.state.epoch == KILL_AT:
        batches = []

        def halt(module, args, output):
            batches.append(module.training)
            if batches == [True, True]:
                MARKER.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGSTOP)

        trainer.model.register_forward_hook(halt)


checkpoint.Checkpointer.on_epoch_end = on_epoch_end
main()
"""

CLI = [
    "trainer.epochs=6",
    "data.n_rows=160",
    "trainer.batch_size=32",
    "trainer.device=cpu",
    "model.dropout=0.2",
    "scheduler=multistep",
    "scheduler.milestones=[3,6]",
    "trainer.deterministic=true",
    "trainer.checkpoint_interval_s=0",  # last.pt after every epoch: the kill finds epoch 2's
    *LEAN,
]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["cv=kfold", "cv.folds=3"]], ids=["single", "cv-packed"])
def test_sigkilled_run_resumes_to_the_same_metrics(tmp_path, extra):
    env = {**os.environ, "PRICENET_ROOT": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    (tmp_path / "driver.py").write_text(DRIVER)
    marker = tmp_path / "stopped"
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "driver.py", "2", str(marker), *CLI, *extra, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the run never reached epoch 3: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()
    assert load_checkpoint(killed / "last.pt")["epoch"] == 2

    resumed = run_cli(
        *CLI, *extra, f"trainer.resume={killed}", f"hydra.run.dir={tmp_path}/resumed", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = run_cli(*CLI, *extra, f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]

    resumed_metrics = (tmp_path / "resumed/metrics.json").read_text()
    assert resumed_metrics == (tmp_path / "full/metrics.json").read_text()
    assert json.loads(resumed_metrics)["epochs_run"] == 6
    with open(tmp_path / "resumed/metrics.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == [str(i) for i in range(1, 7)]
    assert not (killed / "metrics.json").exists()  # the killed run's folder is left as it was
