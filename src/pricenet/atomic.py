"""Atomic file writes: a temporary file beside the target, fsynced, then ``os.replace``d.

A crash at any point leaves either the old file or the new one, never a truncated mix; the
file gets the permissions ``open()`` would give it (the umask). A full disk, a read-only file
system or a refused permission is one :class:`WriteError` naming the path (the old file is
kept, the temporary one removed), and a device, FIFO or socket is never replaced. No heavy
imports: leaderboards and metrics use it as well as checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pricenet.errors import PricenetError, cause_of


class WriteError(PricenetError, OSError):
    """An output that could not be written (full disk, read-only file system, permissions):
    a user-facing one-line error that is still an ``OSError`` to code that catches those."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, sync it, then ``os.replace`` it in.

    A crash at any point leaves either the old file or the new one, never a truncated mix; an
    ``OSError`` on the way (ENOSPC, EROFS, EACCES ...) becomes a :class:`WriteError`.
    """
    _refuse_special(path)
    existed = path.exists()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask like open()
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        kept = "the old file is unchanged" if existed else "nothing was written"
        _raise_write_error(path, err, kept)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable, where supported
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


@contextlib.contextmanager
def reporting_write_errors(path: Path, kept: str = "it may be incomplete") -> Iterator[None]:
    """Turn an ``OSError`` raised inside (a full disk ...) into a :class:`WriteError` naming
    ``path``: for files appended to in place, like ``metrics.csv``."""
    try:
        yield
    except Exception as err:
        _raise_write_error(path, err, kept)
        raise


def _raise_write_error(path: Path, err: BaseException, kept: str) -> None:
    """Raise a :class:`WriteError` for ``err`` when an ``OSError`` is behind it (torch's zip
    writer wraps it); return for anything else (a user error, an interrupt, a bug)."""
    if isinstance(err, PricenetError) or not isinstance(err, Exception):
        return
    cause = cause_of(err, OSError)
    if cause is not None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        raise WriteError(f"{path}: cannot write ({reason}); {kept}") from err


def _refuse_special(path: Path) -> None:
    """A device, FIFO, socket or directory at ``path`` is never replaced by a file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO ...)"
        raise WriteError(f"{path}: is {what}; pricenet writes only regular files")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (metrics.json, config.yaml, leaderboards)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_value(value: Any) -> Any:
    """``value`` as strict JSON takes it: numpy scalars as Python numbers, non-finite floats
    as None, tuples as lists, dicts and lists converted item by item. numpy is never
    imported here: a numpy scalar exists only once numpy is."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` to ``path`` atomically as strict, indented JSON (:func:`json_value`)."""
    return atomic_write_text(
        path, json.dumps(json_value(payload), indent=2, allow_nan=False) + "\n"
    )


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (exported graphs)."""
    return atomic_write(Path(path), lambda handle: handle.write(data))
