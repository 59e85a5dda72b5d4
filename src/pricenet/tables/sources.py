"""The data config's sources, and the per-process cache that sweeps share.

``data.source`` is a ``_target_`` node: :func:`synthetic` (the embedded phone-price
generator) or :func:`csv` (a file validated against a schema, given or inferred). A schema is
given as a mapping (``conf/data/schema/*.yaml``) or as the path of a YAML file written by
``python -m pricenet.schema``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pricenet.errors import ConfigError, user_error
from pricenet.tables.read import DEFAULT_MAX_BYTES, read_csv
from pricenet.tables.schema import Schema
from pricenet.tables.synthetic import make_synthetic
from pricenet.tables.table import Table


def resolve_schema(
    schema: Mapping | str | Schema | None, where: str = "data.schema"
) -> Schema | None:
    """A :class:`Schema` from a mapping, a YAML file's path, or None (infer from the file)."""
    if schema is None or isinstance(schema, Schema):
        return schema
    if isinstance(schema, str):
        path = Path(schema).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}={schema}: no such schema file")
        return Schema.from_yaml(path)
    if isinstance(schema, Mapping):
        return Schema.from_dict(dict(schema), where)
    raise ConfigError(f"{where}: expected a schema mapping or a YAML path, got {schema!r}")


def csv(
    path: str,
    schema: Mapping | str | None = None,
    label: str | None = None,
    id: str | None = None,
    missing: str = "error",
    ranges: str = "error",
    max_bytes: int = DEFAULT_MAX_BYTES,
    group: str | None = None,
) -> Table:
    """``data=csv``: the file at ``path``, validated against ``schema`` (None: inferred);
    ``group`` names the column whose values group rows (``data.group``)."""
    resolved = resolve_schema(schema)
    if resolved is not None and label == resolved.label:
        label = None  # the schema names it already
    return read_csv(
        path,
        resolved,
        label=label,
        id=id,
        missing=missing,
        ranges=ranges,
        max_bytes=max_bytes,
        group=group,
    )


def synthetic(n_rows: int = 2000, noise: float = 0.05, seed: int = 0) -> Table:
    """``data=synthetic``: the seeded phone-price generator (schema ``mobile_price``)."""
    return make_synthetic(n_rows, noise, seed)


# Jobs of a sweep share a process (basic launcher) or a few workers (joblib): each source is
# generated, or read and validated, once per process. A few entries bound the memory.
_TABLES: OrderedDict[tuple[Any, ...], Table] = OrderedDict()
_TABLES_KEPT = 4


def load_table(source: dict[str, Any]) -> Table:
    """The table that ``source`` (a ``_target_`` config, resolved) builds, cached per process.

    The key is the source config plus, for a file, its size and modification time, so an
    edited CSV is read again. Every call returns a fresh copy: no job can alter another's data.
    """
    from hydra.utils import instantiate

    key: tuple[Any, ...] = (repr(sorted(source.items())),)
    if source.get("path") is not None:
        path = Path(source["path"]).expanduser()
        if path.is_file():
            stat = path.stat()
            key += (stat.st_size, stat.st_mtime_ns)
    table = _TABLES.get(key)
    if table is None:
        try:
            table = instantiate(source, _convert_="all")
        except Exception as err:  # Hydra wraps the source's own one-line error: unwrap it
            cause = user_error(err)
            if cause is None:
                raise
            raise cause from None
        _TABLES[key] = table
        if len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return replace(
        table,
        frame=table.frame.copy(),
        labels=None if table.labels is None else table.labels.copy(),
        ids=None if table.ids is None else table.ids.copy(),
        groups=None if table.groups is None else table.groups.copy(),
    )
