"""Run folders: claimed atomically before anything is written, so a refused run changes nothing.

A run folder belongs to the first run that creates its marker file with ``O_CREAT | O_EXCL``
(atomic on every POSIX filesystem): a second run started into the same folder, even 50 ms
later, is refused before it writes a byte. From the command line the claim is made by the
:class:`ClaimRunDir` Hydra callback, before Hydra writes ``.hydra/`` into the folder, and only
once the config has passed every check, so a typo leaves no folder behind.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.tables.sources import describe, load_plain_yaml, plain

MARKER = ".pricenet-run"
# Files that mean a folder already holds a run (older runs have no marker).
EARLIER = ("metrics.json", "last.pt", "best.pt", ".hydra")

# Folders the callback claimed for the run about to start; that run takes its claim over.
_handed_over: set[Path] = set()


def claim_run_dir(run_dir: str | Path, *, hydra_wrote: bool = False) -> Path:
    """Create ``run_dir`` and claim it for this run, or raise :class:`ConfigError`.

    A folder that :class:`ClaimRunDir` claimed for this run is taken over once. In a
    multirun, Hydra has already written the job's ``.hydra/`` (``hydra_wrote``).
    """
    folder = Path(os.path.abspath(Path(run_dir).expanduser()))
    if folder in _handed_over:
        _handed_over.discard(folder)
        return folder
    ignored = (".hydra",) if hydra_wrote else ()
    earlier = [name for name in EARLIER if name not in ignored and (folder / name).exists()]
    if earlier:
        raise ConfigError(
            f"{folder}: already holds an earlier run ({', '.join(earlier)}); refusing to touch "
            "it (to continue that run: trainer.resume=<that folder>)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = (folder / MARKER).read_text(errors="replace").strip() or "another run"
        raise ConfigError(
            f"{folder}: is being used by another run ({owner}); choose another hydra.run.dir"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"{folder}: cannot create the run folder ({err.strerror or err})"
        ) from None
    with os.fdopen(fd, "w") as handle:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
    return folder


class ClaimRunDir(Callback):
    """Check the config, then claim ``hydra.run.dir``: both before Hydra writes into it."""

    @exit_on_user_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pricenet.pipeline import check_config

        task = copy.deepcopy(config)  # the job's config, as Hydra's run_job derives it
        with read_write(task), open_dict(task):
            del task["hydra"]
        check_config(task)
        _handed_over.add(claim_run_dir(config.hydra.run.dir))


_ABSENT = object()


class StoredConfig:
    """A run folder's ``config.yaml`` read as plain data, as a checkpoint is: values are looked
    up by dotted key and type-checked one by one; nothing is resolved, built or imported.

    A run folder from a colleague or a model zoo is as untrusted as the ``best.pt`` in it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        data = load_plain_yaml(path, str(path))
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of config groups, got {describe(data)}")
        self.data = data

    def node(self, key: str) -> Any:
        """The raw value at ``key`` (``a.b.c``), unchecked; :data:`_ABSENT` when not there."""
        node: Any = self.data
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping):
                where = ".".join(parts[:i])
                raise ConfigError(f"{self.path}: {where}: expected a mapping, got {describe(node)}")
            if part not in node:
                return _ABSENT
            node = node[part]
        return node

    def value(
        self, key: str, expected: str, ok: Callable[[Any], bool], default: Any = _ABSENT
    ) -> Any:
        """The plain value at ``key`` that ``ok`` accepts; ``default`` when absent, if given."""
        value = self.node(key)
        if value is _ABSENT:
            if default is _ABSENT:
                raise ConfigError(f"{self.path}: {key}: missing")
            return default
        return plain(value, f"{self.path}: {key}", expected, ok)
