"""Hydra callback: a cluster sweep's folder must be one that every node sees.

Jobs on other nodes write their run folders under ``hydra.sweep.dir``, submitit passes each job
its pickled task there, and the leaderboard is read back from there: on a disk local to the
submitting host, jobs elsewhere fail or their results vanish. ``launcher=submitit_slurm`` adds
this callback. Before anything is submitted it refuses (one ``error:`` line, exit 2) a sweep
folder on a node-local filesystem when the partition has nodes other than this host, and it
leaves a marker there that each job then looks for, on whatever node it runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

MARKER = ".pricenet-sweep-root"  # written by the driver, read by every job
USAGE_EXIT_CODE = 2
# Filesystems that several hosts mount as one (anything else is taken as local to this host).
SHARED_FS = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "glusterfs",
        "fuse.glusterfs", "cifs", "smb3", "fuse.sshfs", "wekafs", "pvfs2", "orangefs",
        "panfs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse",
    }
)  # fmt: skip


def fs_type(path: Path, mounts: str = "/proc/mounts") -> str:
    """The type of the filesystem ``path`` lives on (the longest mount point above it)."""
    path = path.resolve()
    best, kind = "", "unknown"
    for line in Path(mounts).read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == Path(point) or Path(point) in path.parents) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def partition_nodes(partition: str | None) -> set[str]:
    """The nodes of ``partition`` (the default one if None), as ``sinfo`` names them."""
    command = ["sinfo", "-h", "-N", "-o", "%N", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):  # no SLURM here: submitit will say so
        return set()
    return {name for name in out.stdout.split() if name}


def unshared_reason(sweep_dir: Path, kind: str, nodes: set[str], host: str) -> str | None:
    """Why ``sweep_dir`` cannot hold a sweep whose jobs run on ``nodes``, or None if it can."""
    elsewhere = sorted(nodes - {host, host.split(".")[0]})
    if not elsewhere or kind in SHARED_FS:
        return None
    shown = ", ".join(elsewhere[:3]) + (f" and {len(elsewhere) - 3} more" if elsewhere[3:] else "")
    return (
        f"hydra.sweep.dir={sweep_dir} is on a {kind} filesystem local to {host}, but the jobs "
        f"may run on {shown}: put it on a filesystem every node mounts "
        "(hydra.sweep.dir=/shared/...), or, if it is shared, "
        "hydra.callbacks.shared_sweep_dir.check=false"
    )


class SharedSweepDir(Callback):
    """Refuse a node-local sweep folder up front; let each job confirm that it sees it."""

    def __init__(self, check: bool = True) -> None:
        self.check = check

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the driver, before any submission: check the folder, then leave the marker."""
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if self.check:
            partition = OmegaConf.select(config, "hydra.launcher.partition", default=None)
            nodes = partition_nodes(partition)
            reason = unshared_reason(sweep_dir, fs_type(sweep_dir), nodes, socket.gethostname())
            if reason:
                print(f"error: {reason}", file=sys.stderr)
                sys.exit(USAGE_EXIT_CODE)
        (sweep_dir / MARKER).write_text(
            f"host={socket.gethostname()} pid={os.getpid()} time={time.time():.0f}\n"
        )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In each job, on its node: the driver's marker must be there, else nothing adds up."""
        if not self.check:
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if not (sweep_dir / MARKER).is_file():
            raise RuntimeError(
                f"hydra.sweep.dir={sweep_dir} is not the folder the driver wrote ({MARKER} "
                f"missing) as seen from {socket.gethostname()}: the sweep folder must be on a "
                "filesystem that the submitting host and every node share"
            )
