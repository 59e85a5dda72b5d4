"""The checks a table file passes before a byte of it is read: a regular file, not too large.

Shared by the CSV reader and the Parquet reader (which the reader dispatches to), so both
sit above this module and neither imports the other for it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pricenet.errors import ConfigError, DataError

DEFAULT_MAX_BYTES = 2 * 1024**3
"""Files above 2 GiB are refused before reading (``data.max_bytes`` raises or lowers it).

At about 80 bytes a row that is ~25 million rows, whose float64 frame alone needs ~4 GB.
"""


def check_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, kind: str = "CSV") -> int:
    """The size of ``path``, a regular ``kind`` file of at most ``max_bytes`` (stat only).

    Devices (``/dev/zero``), FIFOs and sockets are refused without being opened, so a FIFO
    with no writer cannot hang and an endless device cannot exhaust memory.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: is a directory, expected a {kind} file")
    if not stat.S_ISREG(info.st_mode):
        what = (
            "a FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "not a plain file"
        )
        raise DataError(f"{path}: is {what}, not a regular file; pricenet reads {kind} files only")
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise ConfigError(f"data.max_bytes={max_bytes!r}: expected a positive integer")
    if info.st_size > max_bytes:
        raise DataError(
            f"{path}: is {info.st_size:,} bytes, over the limit of {max_bytes:,} "
            "(raise it with data.max_bytes)"
        )
    if info.st_size == 0:
        raise DataError(f"{path}: file is empty")
    return info.st_size
