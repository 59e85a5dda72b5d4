"""User-facing errors: one clear line and exit status 2, never a traceback for a user's mistake."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

USAGE_EXIT_CODE = 2
T = TypeVar("T")


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a value quoted in a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PricenetError(Exception):
    """A problem with the user's input (file, config, checkpoint), reported as one line."""


class DataError(PricenetError):
    """A CSV that cannot be used: missing, malformed, or failing the schema."""


class ConfigError(PricenetError):
    """A config value that is out of range or inconsistent."""


class CheckpointError(PricenetError):
    """A checkpoint that is missing, unsafe, corrupt or of an unknown format."""


class DivergenceError(PricenetError):
    """Training produced a non-finite loss."""


def verbose_errors() -> bool:
    """True when the user asked for full tracebacks (HYDRA_FULL_ERROR=1 or PRICENET_DEBUG=1)."""
    return any(
        os.environ.get(k, "") not in ("", "0") for k in ("HYDRA_FULL_ERROR", "PRICENET_DEBUG")
    )


def user_error(err: BaseException) -> PricenetError | None:
    """The :class:`PricenetError` behind ``err``, also when a library wrapped it (instantiate)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, PricenetError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a :class:`PricenetError` escaping ``fn`` into ``error: <message>`` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            cause = user_error(err)
            if cause is None or verbose_errors():
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)

    return wrapper
