"""Check an output folder before any work is done; write bytes atomically.

(Output *files* are checked by :func:`pricenet.cli.check_output_path`.)

Permission bits are not enough (root may write anywhere they say no, and a read-only file
system says yes), so writability is probed by creating and removing a temporary file in the
nearest existing folder. Nothing is left behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pricenet.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(path.anchor or ".")


def _probe_writable(folder: Path, key: str, shown: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{key}={shown}: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pricenet-probe-", dir=folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{key}={shown}: cannot write in {folder} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | Path, key: str = "out_dir") -> Path:
    """``path`` as a Path if files may be written in it (it may not exist yet)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path}: is not a directory")
    _probe_writable(_nearest_existing(path), key, path)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
