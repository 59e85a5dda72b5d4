"""Checkpoints that are written atomically and loaded without running code.

A checkpoint is a dict of tensors and plain Python values, saved with ``torch.save`` to a
temporary file and moved into place with ``os.replace``, so a crash never leaves a truncated
file. It is loaded with ``torch.load(weights_only=True)``: a pickle that tries to build
arbitrary objects is refused before any of its code runs.
"""

from __future__ import annotations

import itertools
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pricenet.atomic import atomic_write
from pricenet.errors import CheckpointError, first_line, shown

# 2: the network is stored as a checked NetworkSpec, never as a config to instantiate.
FORMAT_VERSION = 2
BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    body = {"format_version": FORMAT_VERSION, **payload}
    return atomic_write(Path(path), lambda handle: torch.save(body, handle))


def resolve_checkpoint(path: str | Path, name: str = BEST) -> Path:
    """A checkpoint file, or ``<run folder>/<name>`` when given a run folder."""
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            path = path / name
        found = path.is_file()
    except OSError as err:  # a name too long for the file system, say
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not found:
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format version."""
    path = Path(path)
    _check_archive(path)
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
        first = first_line(err, "").split(". ")[0]
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a pricenet checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {shown(payload['format_version'])} is not supported "
            f"(this pricenet reads format {FORMAT_VERSION}; retrain with this version)"
        )
    check_payload(payload, str(path))
    return payload


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # what torch's pre-1.6 format pickles first


def _check_archive(path: Path) -> None:
    """Refuse a file that would make ``torch.load`` allocate more than the file holds, before
    it reads anything: torch allocates each tensor's storage at the size the file declares.
    A zip entry must be stored, not compressed (``torch.save`` never compresses; a deflated
    entry of a few KB can unpack to gigabytes), and the legacy format, which declares sizes
    ahead of data it may not have, is refused. Other files go on to ``torch.load``, which
    refuses them."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                entries = archive.infolist()
            packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
            if packed:
                raise CheckpointError(
                    f"{path}: {shown(packed[0])} is compressed; torch.save stores tensors "
                    "uncompressed, and a compressed entry could unpack to any size"
                )
            if sum(e.file_size for e in entries) > path.stat().st_size:
                raise CheckpointError(f"{path}: its entries declare more bytes than the file has")
            return
        with path.open("rb") as handle:
            ops = pickletools.genops(handle)
            head = [arg for _, arg, _ in itertools.islice(ops, 3)]
    except CheckpointError:
        raise
    except Exception:  # not a pickle or a damaged zip: torch.load names the problem
        return
    if _LEGACY_MAGIC in head:
        raise CheckpointError(
            f"{path}: is in torch's legacy format (before 1.6), whose tensors are allocated at "
            "declared sizes before they are read; load and save it with a current torch"
        )


# Every top-level key a checkpoint may hold, with the type of its value. Anything else is
# refused: a checkpoint is data in a fixed layout, never a config to interpret.
PAYLOAD_KEYS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "epoch": (int, list),  # an int per member when there are several
    "network": dict,  # a NetworkSpec, checked by whoever builds it
    "model": dict,  # the selected weights (best.pt)
    "trainer": dict,  # the full trainer state (last.pt)
    "schema": dict,  # the table's schema (features, label, classes), checked on load
    "preprocessors": list,  # one fitted Preprocessor state per member
    "temperatures": list,  # one calibration temperature per member
    "settings": dict,  # the run's resolved config, flat: compared on resume, never built
    "data_sha256": str,
}
_PLAIN = (str, int, float, bool, type(None))


def check_payload(payload: dict[str, Any], where: str) -> None:
    """Refuse unknown top-level keys, values of the wrong type and non-plain settings."""
    for key, value in payload.items():
        if key not in PAYLOAD_KEYS:
            raise CheckpointError(f"{where}: unknown key {shown(key)} (not a pricenet checkpoint)")
        expected = PAYLOAD_KEYS[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise CheckpointError(
                f"{where}: {key} is a {type(value).__name__}, expected "
                f"{getattr(expected, '__name__', expected)}"
            )
    for key, value in payload.get("settings", {}).items():
        items = value if isinstance(value, list) else [value]
        if not isinstance(key, str) or not all(isinstance(v, _PLAIN) for v in items):
            raise CheckpointError(
                f"{where}: settings.{key}: {shown(value)} is not a plain value (settings are "
                "flat and are never built)"
            )
        if any(isinstance(v, str) and "${" in v for v in items):
            raise CheckpointError(
                f"{where}: settings.{key}: {shown(value)} is an interpolation; a checkpoint "
                "holds resolved values only"
            )


def check_tensors(
    state: Any, reference: Mapping[str, torch.Tensor], where: str, *, finite: bool = True
) -> dict[str, torch.Tensor]:
    """``state`` if it has exactly ``reference``'s keys, shapes and dtype kinds (and finite
    floating values); else a :class:`CheckpointError` naming ``where`` and the first problem."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: expected a mapping of tensors, got {type(state).__name__}")
    missing = [k for k in reference if k not in state]
    unknown = [k for k in state if k not in reference]
    if missing or unknown:
        parts = [f"missing {', '.join(map(shown, missing[:3]))}" if missing else ""]
        parts.append(f"unexpected {', '.join(map(shown, unknown[:3]))}" if unknown else "")
        raise CheckpointError(
            f"{where}: does not fit the stored network ({'; '.join(p for p in parts if p)})"
        )
    for key, expected in reference.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: {key} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.is_meta or value.is_quantized:
            kind = "a meta" if value.is_meta else f"a {value.layout} / {value.dtype}"
            raise CheckpointError(f"{where}: {key} is {kind} tensor, not a dense one with values")
        if value.shape != expected.shape:
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(value.shape)}, but the stored network needs "
                f"{tuple(expected.shape)}"
            )
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            raise CheckpointError(  # a zero-stride view: a few stored values, a huge shape
                f"{where}: {key} claims more values than its stored data holds"
            )
        if value.is_floating_point() != expected.is_floating_point():
            raise CheckpointError(
                f"{where}: {key} has dtype {value.dtype}, expected {expected.dtype}"
            )
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values")
    return dict(state)


# Keys a resumed run may change: where things live and how they are shown, not the maths.
# trainer.epochs may grow to train longer; a schedule that depends on it (cosine's T_max)
# still has to match.
RESUME_MAY_CHANGE = (
    "trainer.resume",
    "trainer.epochs",
    "trainer.device",
    "trainer.threads",
    "trainer.checkpoint_interval_s",
    "trainer.max_",  # the budget's limits
    "trainer.deterministic",
    "report.",
    "paths.",
    "data.path",
    "data.source.path",
    "callbacks.",  # never saved (code to run, not a setting); each one's state is checked alone
)


# Modules that moved when the package was grouped into subpackages: checkpoints written before
# name their ``_target_`` settings by the old paths, which still mean the same classes (the
# only pricenet ``_target_`` a checkpoint's settings hold is the head's: callbacks are left out).
MOVED_MODULES = {"pricenet.heads.": "pricenet.nn.heads."}


def current_target(target: Any) -> Any:
    """A ``_target_`` read from a checkpoint under its module's present path; other values as
    they are. Only compared, never imported."""
    if isinstance(target, str):
        for old, new in MOVED_MODULES.items():
            if target.startswith(old):
                return new + target[len(old) :]
    return target


def flatten_settings(node: Any, prefix: str = "") -> dict[str, Any]:
    """A resolved config as ``{"optim.lr": 0.01, "model.hidden": [64], ...}``: plain values
    and lists of them only, so a checkpoint never holds a node anything could build."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        return flat
    if isinstance(node, list) and not all(isinstance(v, _PLAIN) for v in node):
        flat = {}
        for i, value in enumerate(node):
            flat.update(flatten_settings(value, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): node}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key (saved there, current here)`` for each setting a resume must keep the same.

    ``saved`` is a checkpoint's flat settings; ``current`` this run's resolved config."""
    old = {k: current_target(v) if k.endswith("._target_") else v for k, v in saved.items()}
    new = flatten_settings(current)
    keys = sorted(k for k in old.keys() | new.keys() if not k.startswith(RESUME_MAY_CHANGE))
    missing = "<unset>"
    return [
        f"{k} ({old.get(k, missing)!r} there, {new.get(k, missing)!r} here)"
        for k in keys
        if old.get(k, missing) != new.get(k, missing)
    ]
