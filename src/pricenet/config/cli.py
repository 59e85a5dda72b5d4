"""``key=value`` command-line options (Hydra's style) for the predict and explain commands.

These commands need a handful of plain options, not a composed config or a run folder, so
they parse ``key=value`` into a typed dataclass with OmegaConf: a typo or a bad value fails
with the key's name, like ``pricenet-train`` does.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pricenet.errors import ConfigError, first_line, shown

T = TypeVar("T")


def parse_options(args: list[str], schema: type[T], usage: str) -> T:
    """``args`` (``key=value`` each) as an instance of the dataclass ``schema``.

    ``-h``/``--help`` prints ``usage`` and exits 0; an unknown key, a bad value or a missing
    required option raises :class:`ConfigError` (one line, naming the key).
    """
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        sys.exit(0)
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"{shown(arg)}: expected key=value (see --help)")
    try:
        cfg: Any = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(args))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{first_line(err)} (see --help)") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing {', '.join(f'{k}=...' for k in missing)} (see --help)")
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _probe_writable(folder: Path, key: str, shown: Path) -> None:
    """Create and remove a temporary file in ``folder``: permission bits are not enough (root
    may write where they say no, a read-only mount says yes)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".pricenet-probe-", dir=folder)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"{key}={shown}: cannot write in {folder} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | Path, overwrite: bool = False, key: str = "output") -> Path:
    """``path`` if a file can be written there, checked BEFORE any work; else ConfigError.

    Refuses a directory, a device, FIFO or socket (even with ``overwrite=true``: replacing
    ``/dev/null`` with a file breaks the machine), an existing file without
    ``overwrite=true``, and a missing or unwritable folder (tried for real with a temporary
    file, which also catches /proc and read-only mounts). A command then passes its inputs to
    :func:`check_not_an_input`.
    """
    path = Path(path).expanduser()
    kind = special_file_kind(path)
    if kind == "a directory":
        raise ConfigError(f"{key}={path}: is a directory; give a file path")
    if kind is not None:
        raise ConfigError(
            f"{key}={path}: is {kind}, not a regular file; pricenet writes only regular files"
        )
    if path.exists() and not overwrite:
        raise ConfigError(f"{key}={path}: already exists; pass overwrite=true to replace it")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"{key}={path}: folder {folder} does not exist")
    _probe_writable(folder, key, path)
    return path


def check_not_an_input(output: Path, inputs: Mapping[str, str | Path], key: str = "output") -> None:
    """Refuse an ``output`` that is one of the command's ``inputs`` (option name -> path: the
    input CSV, the checkpoint), even with ``overwrite=true``: a command must not destroy what
    it reads. Links and ``..`` detours count as the same file."""
    for name, source in inputs.items():
        if same_file(output, Path(source).expanduser()):
            raise ConfigError(
                f"{key}={output}: is also {name}={source}; writing it would destroy the "
                "command's own input, even with overwrite=true"
            )


def special_file_kind(path: Path) -> str | None:
    """What ``path`` (followed through links) is when it exists and is not a regular file:
    ``"a directory"``, ``"a character device"``, ``"a FIFO"`` ...; None for a regular file or
    a new path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode (hard and symbolic links, ``..``
    detours) when both exist, else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_dir(path: str | Path, key: str = "out_dir") -> Path:
    """``path`` if files may be written in it (it may not exist yet: its nearest existing
    parent must be a writable directory); checked before any work."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path}: is not a directory")
    nearest = next((f for f in (path, *path.parents) if f.exists()), Path(path.anchor or "."))
    if not nearest.is_dir():
        raise ConfigError(f"{key}={path}: {nearest} is not a directory")
    _probe_writable(nearest, key, path)
    return path
