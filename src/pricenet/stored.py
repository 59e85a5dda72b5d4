"""Files that are data, not the user's own config: read as plain values, never resolved or built.

A run folder from a colleague or a model zoo (its ``config.yaml``, ``.hydra/``), a sweep's job
folders and a schema file such a folder names are as untrusted as a checkpoint. They are read
with YAML's safe loader without aliases, and every value is type-checked where it is used: a
mapping, a list or an ``${...}`` interpolation where a plain value belongs is one
:class:`~pricenet.errors.ConfigError` naming the file and the key. Nothing here imports torch,
so the leaderboard can use it too.
"""

from __future__ import annotations

import math
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pricenet.errors import ConfigError, first_line, shown

# A run's config.yaml is a few KB; one with the inlined schema of 100k columns about 8 MB.
MAX_STORED_YAML_BYTES = 8 * 1024**2
# libyaml's loader when there is one: four times faster, and it caps the nesting depth.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_aliases(value: Any, where: str) -> None:
    """An alias (``*name``) loads as the same container twice: refuse it, walking each
    container once, since it is how a few bytes expand into billions of nodes for whatever
    walks the tree next."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                raise ConfigError(f"{where}: YAML aliases are not allowed in a stored file")
            seen.add(id(node))
            stack.extend(node.values() if isinstance(node, dict) else node)


def load_plain_yaml(path: str | Path, where: str) -> Any:
    """The plain values (mappings, lists, text, numbers, booleans, nulls) of a YAML file that
    is data, not the user's own config: never resolved, never built. Errors name ``where``."""
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except OSError as err:
        raise ConfigError(f"{where}: cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}: is not a regular file")
    if info.st_size > MAX_STORED_YAML_BYTES:
        raise ConfigError(
            f"{where}: {info.st_size:,} bytes, more than the {MAX_STORED_YAML_BYTES:,} a config "
            "or schema file may have"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506
    except OSError as err:
        raise ConfigError(f"{where}: cannot be read ({err.strerror or err})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as err:
        raise ConfigError(f"{where}: not valid YAML ({first_line(err)[:120]})") from None
    _refuse_aliases(data, where)
    return data


def describe(value: Any) -> str:
    """A stored value as an error line quotes it: containers by kind, text cut short."""
    if isinstance(value, Mapping):
        return "a _target_ node" if "_target_" in value else "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    if isinstance(value, str):
        return shown(value[:200])
    if value is None or isinstance(value, bool | int | float):
        return shown(value)
    return f"a {type(value).__name__}"


def plain(value: Any, where: str, expected: str, ok: Callable[[Any], bool]) -> Any:
    """``value`` if it is the plain value ``ok`` accepts; else one line naming ``where``."""
    if isinstance(value, str) and "${" in value:
        raise ConfigError(
            f"{where}: {describe(value)} is an interpolation; a stored config is read as "
            "plain values, never resolved"
        )
    if not ok(value):
        raise ConfigError(f"{where}: expected {expected}, got {describe(value)}")
    return value


def refuse_code_nodes(value: Any, where: str) -> None:
    """Refuse any Hydra key (``_target_``, ``_args_``, ...) or interpolation inside ``value``:
    stored data never builds or resolves anything, and saying so beats a puzzling error."""
    stack = [(value, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, Mapping):
            for key in node:
                if isinstance(key, str) and len(key) > 2 and key[0] == key[-1] == "_":
                    raise ConfigError(
                        f"{at}: {describe(key)} node: a stored config is data, nothing in it "
                        "is built"
                    )
            children = [(child, f"{at}.{str(key)[:60]}") for key, child in node.items()]
        elif isinstance(node, list | tuple):
            children = [(child, f"{at}[{i}]") for i, child in enumerate(node)]
        else:
            plain(node, at, "a plain value", lambda _: True)
            continue
        stack.extend(reversed(children))  # in the file's order


def is_int(value: Any) -> bool:
    """An integer, not a boolean (YAML's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite number that fits a float (YAML integers may have thousands of digits)."""
    if is_int(value):
        return abs(value) <= sys.float_info.max
    return isinstance(value, float) and math.isfinite(value)


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

    def node(self, key: str, default: Any = _ABSENT) -> Any:
        """The raw value at ``key`` (``a.b.c``), unchecked; ``default`` when absent, if given."""
        node: Any = self.data
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping):
                where = ".".join(parts[:i])
                raise ConfigError(f"{self.path}: {where}: expected a mapping, got {describe(node)}")
            if part not in node:
                if default is _ABSENT:
                    raise ConfigError(f"{self.path}: {key}: missing")
                return default
            node = node[part]
        return node

    def value(
        self, key: str, expected: str, ok: Callable[[Any], bool], default: Any = _ABSENT
    ) -> Any:
        """The plain value at ``key`` that ``ok`` accepts; ``default`` when absent, if given."""
        value = self.node(key, default)
        if value is default and default is not _ABSENT:
            return default
        return plain(value, f"{self.path}: {key}", expected, ok)
