"""User-facing errors: one clear line and exit status 2, never a traceback for a user's mistake."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence, Set
from typing import TypeVar

USAGE_EXIT_CODE = 2
T = TypeVar("T")


# The longest line an error prints; a longer message (a huge path) keeps its start and end.
MAX_LINE = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a value quoted in a one-line error.

    Only a prefix of the value is ever turned into text, so quoting a 10 MB label costs no
    more than quoting a short one, and 5000-deep nested lists never reach ``repr``'s
    recursion limit."""
    text = _prefix(value, limit + 1, depth=0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prefix(value: object, budget: int, depth: int) -> str:
    """At least ``min(budget, len(repr(value)))`` leading characters of ``repr(value)``
    (containers item by item, stopping once ``budget`` is spent or 20 levels deep)."""
    if isinstance(value, str | bytes):
        return repr(value[:budget])
    mapping = isinstance(value, Mapping)
    if not (mapping or isinstance(value, Sequence | Set)) or not value:
        return repr(value)[: max(budget, 0) + 1]
    if depth >= 20:
        return "..."
    opening, closing = "{}" if mapping or isinstance(value, Set) else "[]"
    if isinstance(value, tuple):
        opening, closing = "(", ",)" if len(value) == 1 else ")"
    text = opening
    for i, item in enumerate(value.items() if mapping else value):
        if len(text) >= budget:
            return text + "..."
        text += ", " if i else ""
        if mapping:
            text += _prefix(item[0], budget - len(text), depth + 1) + ": "
            item = item[1]
        text += _prefix(item, budget - len(text), depth + 1)
    return text + closing


def one_line(message: str, limit: int = MAX_LINE) -> str:
    """``message`` as one printable line: control characters (a newline in a path) escaped
    as ``\\n``, and at most ``limit`` characters (its start and end kept)."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), message)
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first non-blank line of ``err``'s message: what a one-line error quotes of an
    exception a library raised. An empty message gives ``default`` (the exception's type
    name when None)."""
    lines = str(err).strip().splitlines()
    if lines:
        return lines[0]
    return type(err).__name__ if default is None else default


class PricenetError(Exception):
    """A problem with the user's input (file, config, checkpoint), reported as one line."""


class DataError(PricenetError):
    """A CSV that cannot be used: missing, malformed, or failing the schema."""


class ConfigError(PricenetError):
    """A config value that is out of range or inconsistent; ``problems`` lists each one when
    the message gathers several (:class:`Problems`)."""

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]


class Problems:
    """The problems a check finds, gathered so that one :class:`ConfigError` lists them all.

    A check reports with :meth:`invalid` / :meth:`add`, or runs a function that raises
    ConfigError through :meth:`run`; :meth:`raise_if_any` then raises one error whose message
    is the problem itself when there is one, else ``N problems in the config: a; b; c`` (one
    line, at most :data:`MAX_LINE` characters: what does not fit is counted, not listed).
    """

    def __init__(self, what: str = "the config") -> None:
        self.what = what
        self.messages: list[str] = []
        self.keys: set[str] = set()  # the keys named by :meth:`invalid` / :meth:`add`

    def __bool__(self) -> bool:
        return bool(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, message: str, key: str | None = None) -> None:
        self.messages.append(message)
        if key is not None:
            self.keys.add(key)

    def invalid(self, key: str, value: object, allowed: str) -> None:
        """``key=value is invalid: allowed``: the wording of every value check."""
        self.add(f"{key}={value!r} is invalid: {allowed}", key)

    def groups(self) -> set[str]:
        """The config groups (``optim``, ``trainer`` ...) a problem was found in."""
        return {key.split(".")[0].split("[")[0] for key in self.keys}

    def run(self, check: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        """``check(*args, **kwargs)``; a :class:`ConfigError` it raises becomes a problem
        (and None is returned)."""
        try:
            return check(*args, **kwargs)
        except ConfigError as err:
            self.messages.extend(err.problems)
            return None

    def message(self, limit: int = MAX_LINE) -> str:
        if len(self.messages) == 1:
            return self.messages[0]
        text = f"{len(self.messages)} problems in {self.what}: "
        for i, problem in enumerate(self.messages):
            more = f"; ... and {len(self.messages) - i} more"
            if i and len(text) + 2 + len(problem) + len(more) > limit:
                return text + more
            text += ("; " if i else "") + problem
        return text

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(self.message(), problems=self.messages)


class CheckpointError(PricenetError):
    """A checkpoint that is missing, unsafe, corrupt or of an unknown format."""


class DivergenceError(PricenetError):
    """Training produced a non-finite loss."""


def verbose_errors() -> bool:
    """True when the user asked for full tracebacks (HYDRA_FULL_ERROR=1 or PRICENET_DEBUG=1)."""
    return any(
        os.environ.get(k, "") not in ("", "0") for k in ("HYDRA_FULL_ERROR", "PRICENET_DEBUG")
    )


E = TypeVar("E", bound=BaseException)


def cause_of(err: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` exception in ``err``'s chain (``err`` itself, then what it was raised
    from or during), so that one a library wrapped is still found; None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def user_error(err: BaseException) -> PricenetError | None:
    """The :class:`PricenetError` behind ``err``, also when a library wrapped it (instantiate)."""
    return cause_of(err, PricenetError)


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
            print(f"error: {one_line(str(cause))}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)

    return wrapper
