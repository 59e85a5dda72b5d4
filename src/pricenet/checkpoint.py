"""Checkpoints that are written atomically and loaded without running code.

A checkpoint is a dict of tensors and plain Python values, saved with ``torch.save`` to a
temporary file and moved into place with ``os.replace``, so a crash never leaves a truncated
file. It is loaded with ``torch.load(weights_only=True)``: a pickle that tries to build
arbitrary objects is refused before any of its code runs.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from pricenet.errors import CheckpointError

FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Checkpointer:
    """Trainer callback: ``last.pt`` after every epoch, ``best.pt`` when the monitor improves.

    ``meta`` (scaler, head, class count, resolved config) goes into both, so either file is
    enough to predict; ``last.pt`` also holds the full trainer state to resume.
    """

    def __init__(self, run_dir: str | Path, meta: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta

    def on_epoch_end(self, trainer: Any) -> None:
        state = trainer.state
        save_checkpoint(
            self.run_dir / LAST,
            {**self.meta, "epoch": state.epoch, "trainer": trainer.state_dict()},
        )
        if state.best_epoch == state.epoch:
            save_checkpoint(
                self.run_dir / BEST,
                {**self.meta, "epoch": state.epoch, "model": trainer.best_model_state},
            )


def resolve_checkpoint(path: str | Path, name: str = BEST) -> Path:
    """A checkpoint file, or ``<run folder>/<name>`` when given a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format version."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused to load an unsafe or corrupt checkpoint ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a pricenet checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']!r} is not supported "
            f"(this pricenet reads format {FORMAT_VERSION})"
        )
    return payload
