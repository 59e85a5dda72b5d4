"""Run folders: claimed atomically before anything is written, so a refused run changes nothing.

A run folder belongs to the first run that creates its marker file with ``O_CREAT | O_EXCL``
(atomic on every POSIX filesystem): a second run started into the same folder, even 50 ms
later, is refused before it writes a byte. From the command line the claim is made by the
:class:`ClaimRunDir` Hydra callback, before Hydra writes ``.hydra/`` into the folder, and only
once the config has passed every check, so a typo leaves no folder behind.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from pricenet.config.config import check_config
from pricenet.errors import ConfigError, exit_on_user_error

MARKER = ".pricenet-run"
# Files that mean a folder already holds a run (older runs have no marker).
EARLIER = ("metrics.json", "last.pt", "best.pt", ".hydra")

# Folders the callback claimed for the run about to start (and whether the claim created
# them); that run takes its claim over. A claim never taken over is released at exit.
_handed_over: dict[Path, bool] = {}
_LEFT_BY_HYDRA = (".hydra", MARKER)


def claim_run_dir(run_dir: str | Path, *, hydra_wrote: bool = False) -> Path:
    """Create ``run_dir`` and claim it for this run, or raise :class:`ConfigError`.

    A folder that :class:`ClaimRunDir` claimed for this run is taken over once. In a
    multirun, Hydra has already written the job's ``.hydra/`` (``hydra_wrote``).
    """
    folder = Path(os.path.abspath(Path(run_dir).expanduser()))
    if folder in _handed_over:
        del _handed_over[folder]
        return folder
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"hydra.run.dir={folder}: is not a folder")
    ignored = (".hydra",) if hydra_wrote else ()
    earlier = [name for name in EARLIER if name not in ignored and (folder / name).exists()]
    if earlier:
        hint = (
            "to continue that run: trainer.resume=<that folder>"
            if (folder / "last.pt").exists()
            else "it holds no last.pt to resume from: choose another hydra.run.dir"
        )
        raise ConfigError(
            f"{folder}: already holds an earlier run ({', '.join(earlier)}); refusing to touch "
            f"it ({hint})"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"{folder}: cannot create the run folder ({err.strerror or err})"
        ) from None
    try:
        fd = os.open(folder / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise ConfigError(f"{folder}: {_claimed_by(folder / MARKER)}") from None
    except OSError as err:
        raise ConfigError(
            f"{folder}: cannot create the run folder ({err.strerror or err})"
        ) from None
    with os.fdopen(fd, "w") as handle:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
    return folder


def _claimed_by(marker: Path) -> str:
    """Why a folder with a marker (and no run in it) is refused: a live run, or a dead claim."""
    try:
        owner = marker.read_text(errors="replace").strip()[:200] or "another run"
    except OSError:
        owner = "another run"
    words = owner.split()
    ours = len(words) >= 4 and words[0] == "pid" and words[3] == socket.gethostname()
    if ours and words[1].isdigit() and not _alive(int(words[1])):
        return (
            f"was claimed by a run that ended before training ({owner}); nothing in it to "
            "resume: remove the folder or choose another hydra.run.dir"
        )
    return f"is being used by another run ({owner}); choose another hydra.run.dir"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or no pid at all): assume it is running
    return True


def release_run_dir(folder: Path, created: bool) -> None:
    """Undo a claim whose run never took it over (refused before training): the marker goes,
    and with it what Hydra wrote for the run (``.hydra/``, its log); the folder too when the
    claim created it. A rerun then finds the folder as it was, not a run to resume."""
    (folder / MARKER).unlink(missing_ok=True)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    if any(e.name not in _LEFT_BY_HYDRA and e.suffix != ".log" for e in entries):
        return  # something else is there: leave it all
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _release_unclaimed() -> None:
    """At exit: release every claim its run never took over."""
    for folder, created in list(_handed_over.items()):
        del _handed_over[folder]
        release_run_dir(folder, created)


class ClaimRunDir(Callback):
    """Check the config, then claim ``hydra.run.dir``: both before Hydra writes into it."""

    @exit_on_user_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = copy.deepcopy(config)  # the job's config, as Hydra's run_job derives it
        with read_write(task), open_dict(task):
            del task["hydra"]
        check_config(task)
        folder = Path(os.path.abspath(Path(config.hydra.run.dir).expanduser()))
        created = not folder.exists()
        _handed_over[claim_run_dir(folder)] = created
        # A run refused before it takes its claim over exits through SystemExit, which Hydra's
        # on_job_end never sees: release what it left when the process ends.
        atexit.unregister(_release_unclaimed)
        atexit.register(_release_unclaimed)
