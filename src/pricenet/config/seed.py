"""Seeding and device choice: the two things every run settles first.

torch is imported inside the functions, so importing this module (and the config schemas
that use :data:`DEVICES`) stays fast: a config error is reported before torch loads.
"""

from __future__ import annotations

import functools
import os
import random
import re
from typing import TYPE_CHECKING

from pricenet.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::\d+)?")


def check_device_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(
            f"trainer.device={name!r} is invalid: must be one of {', '.join(DEVICES)} or cuda:N"
        )


def set_seed(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch, and switch deterministic kernels on or off.

    ``deterministic`` is applied both ways, so one run's choice never leaks into the next
    run of the same process. Returns the seed used, so callers can record it.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS reads this when its first handle is created: before any CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    return seed


def resolve_device(name: str) -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` to a device; ``auto`` picks CUDA when it is available."""
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={name!r} was requested but no CUDA GPU is available; "
                "use trainer.device=cpu (or auto)"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={name!r}: there is no GPU {index} "
                f"(found {torch.cuda.device_count()}: cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    return torch.device(name)


@functools.cache
def _default_threads() -> int:
    """What torch chose for this process, read before any job changes it."""
    import torch

    return torch.get_num_threads()


def set_threads(threads: int | None) -> int:
    """Use ``threads`` threads for torch's CPU kernels (its OpenMP pool too); None: the default.

    The default is the process's own, so a sweep's job never inherits the job before it.
    Returns the count in effect, so callers can record it.
    """
    import torch

    torch.set_num_threads(threads or _default_threads())
    return torch.get_num_threads()
