"""Seeding and device choice: the two things every run settles first."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from pricenet.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def set_seed(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch; with ``deterministic`` also force deterministic kernels.

    Returns the seed used, so callers can record it.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return seed


def resolve_device(name: str) -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` to a device; ``auto`` picks CUDA when it is available."""
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise ConfigError(f"trainer.device={name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} was requested but no CUDA GPU is available")
    return torch.device(name)
