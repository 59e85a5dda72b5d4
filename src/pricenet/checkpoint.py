"""Checkpoints that are written atomically and loaded without running code.

A checkpoint is a dict of tensors and plain Python values, saved with ``torch.save`` to a
temporary file and moved into place with ``os.replace``, so a crash never leaves a truncated
file. It is loaded with ``torch.load(weights_only=True)``: a pickle that tries to build
arbitrary objects is refused before any of its code runs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from pricenet.errors import CheckpointError

FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, sync it, then ``os.replace`` it in.

    A crash at any point leaves either the old file or the new one, never a truncated mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable, where supported
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    body = {"format_version": FORMAT_VERSION, **payload}
    return _atomic_write(Path(path), lambda handle: torch.save(body, handle))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (metrics.json, config.yaml)."""
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(err))
        reason = f"it would call {unsafe.group(1)}" if unsafe else "it is not plain weights"
        raise CheckpointError(
            f"{path}: refused to load ({reason}); checkpoints are loaded with "
            "weights_only=True and may hold only tensors and plain values"
        ) from None
    except Exception as err:  # a hand-made file can fail inside torch in any way
        first = str(err).strip().split("\n")[0].split(". ")[0]
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a pricenet checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']!r} is not supported "
            f"(this pricenet reads format {FORMAT_VERSION})"
        )
    return payload


# Keys a resumed run may change: where things live and how they are shown, not the maths.
# trainer.epochs may grow to train longer; a schedule that depends on it (cosine's T_max)
# still has to match.
RESUME_MAY_CHANGE = (
    "trainer.resume",
    "trainer.epochs",
    "trainer.device",
    "trainer.threads",
    "trainer.checkpoint_interval_s",
    "trainer.deterministic",
    "report.",
    "paths.",
    "data.path",
    "data.source.path",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key (saved there, current here)`` for each setting a resume must keep the same."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(k for k in old.keys() | new.keys() if not k.startswith(RESUME_MAY_CHANGE))
    missing = "<unset>"
    return [
        f"{k} ({old.get(k, missing)!r} there, {new.get(k, missing)!r} here)"
        for k in keys
        if old.get(k, missing) != new.get(k, missing)
    ]


def resume_state(path: str | Path, config: dict[str, Any]) -> dict[str, Any]:
    """The trainer state in ``last.pt`` (or a run folder's), checked against this run's config.

    It is loaded on the CPU (RNG states must stay there); the trainer moves the rest.

    Resuming with other settings would silently train a different model, so any difference
    outside :data:`RESUME_MAY_CHANGE` is a :class:`CheckpointError` that names the keys.
    """
    file = resolve_checkpoint(path, LAST)
    checkpoint = load_checkpoint(file)
    if not isinstance(checkpoint.get("trainer"), dict):
        raise CheckpointError(f"{file}: holds no trainer state to resume from (use a last.pt)")
    differences = config_differences(checkpoint.get("config") or {}, config)
    if differences:
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        overrides = file.parent / ".hydra" / "overrides.yaml"
        hint = f" (the original overrides are in {overrides})" if overrides.is_file() else ""
        raise CheckpointError(
            f"{file}: was trained with other settings: {shown}; resume with the same "
            f"overrides as the original run{hint}"
        )
    return checkpoint["trainer"]
