"""Checkpoints: atomic writes, safe loading (weights_only) and a checked format version."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from pricenet.atomic import atomic_write_text
from pricenet.checkpoints import checkpoint
from pricenet.checkpoints.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from pricenet.checkpoints.restore import resume_state
from pricenet.config.config import to_container
from pricenet.errors import CheckpointError
from pricenet.run.pipeline import run

# No reports (another issue's business), and one thread: faster for tensors this small.
LEAN = (
    "report.tensorboard=false",
    "report.plots=false",
    "report.progress=none",
    "trainer.threads=1",
)


class CreatesFile:
    """Unpickling this calls ``open(target, "w")``: loading it would create ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class RunsCommand:
    """Unpickling this runs ``touch target`` through ``os.system``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def craft(kind: str, path: Path, target: Path) -> None:
    payload = {"format_version": FORMAT_VERSION, "model": {}}
    if kind == "torch-save-open":
        torch.save({**payload, "x": CreatesFile(target)}, path)
    elif kind == "pickle-open":
        path.write_bytes(pickle.dumps({**payload, "x": CreatesFile(target)}, protocol=2))
    else:
        path.write_bytes(pickle.dumps({**payload, "x": RunsCommand(target)}, protocol=2))


@pytest.mark.parametrize("kind", ["torch-save-open", "pickle-open", "pickle-os-system"])
def test_crafted_pickle_is_refused_and_creates_no_file(tmp_path, kind):
    # The payload is real: plain unpickling of the same kind of file does create its target.
    craft(kind, tmp_path / "proof.pt", tmp_path / "proof-created")
    with open(tmp_path / "proof.pt", "rb") as handle:
        if kind == "torch-save-open":
            torch.load(handle, weights_only=False)
        else:
            pickle.load(handle)
    assert (tmp_path / "proof-created").exists()

    target = tmp_path / "pwned"
    craft(kind, tmp_path / "evil.pt", target)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load .*weights_only=True"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not target.exists()


def test_format_version_is_written_and_checked(tmp_path):
    path = save_checkpoint(tmp_path / "best.pt", {"model": {"w": torch.ones(2)}})
    assert load_checkpoint(path)["format_version"] == FORMAT_VERSION

    torch.save({"format_version": FORMAT_VERSION + 1, "model": {}}, tmp_path / "future.pt")
    with pytest.raises(
        CheckpointError,
        match=rf"future\.pt: checkpoint format {FORMAT_VERSION + 1} is not supported",
    ):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt: not a pricenet checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_damaged_file_is_a_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "best.pt", {"model": {"w": torch.ones(100)}})
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"hello"}[damage])
    with pytest.raises(CheckpointError, match=r"best\.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_crash_while_saving_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "best.pt", {"model": {"w": torch.zeros(4)}})
    before = path.read_bytes()

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.ones(4)}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary file left


def test_atomic_text_write_replaces_whole_file(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "{}\n")
    atomic_write_text(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("scheduler", ["multistep", "plateau"])
def test_run_checkpoints_load_with_weights_only(compose_cfg, tmp_path, scheduler):
    """last.pt (full trainer state, MultiStepLR's Counter included) and best.pt load safely."""
    cfg = compose_cfg(f"scheduler={scheduler}", "trainer.epochs=3", "data.n_rows=120", *LEAN)
    metrics, artifacts = run(cfg, tmp_path / "run")
    last = load_checkpoint(artifacts["last.pt"])
    best = load_checkpoint(artifacts["best.pt"])
    assert last["epoch"] == 3 and last["trainer"]["fit"]["epoch"] == 3
    assert set(last["trainer"]) == {
        "model",
        "optimizer",
        "fit",
        "steps",
        "callbacks",
        "rng",
        "best_score",
    }
    assert best["epoch"] == metrics["best_epoch"]
    assert best["model"].keys() == last["trainer"]["model"].keys()
    assert {"network", "schema", "preprocessors", "temperatures", "settings"} <= best.keys()
    assert best["network"]["head"] == "categorical"
    assert resume_state(tmp_path / "run", to_container(cfg)).state["fit"]["epoch"] == 3


def test_resume_refuses_a_checkpoint_without_trainer_state(tmp_path):
    save_checkpoint(tmp_path / "best.pt", {"model": {}, "settings": {}})
    with pytest.raises(CheckpointError, match=r"best\.pt: holds no trainer state"):
        resume_state(tmp_path / "best.pt", {})
    with pytest.raises(CheckpointError, match=r"last\.pt: checkpoint not found"):
        resume_state(tmp_path, {})
