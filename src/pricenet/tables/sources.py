"""The data config's sources, and the per-process cache that sweeps share.

``data.source`` is a ``_target_`` node: :func:`synthetic` (the embedded phone-price
generator) or :func:`csv` (a file validated against a schema, given or inferred). A schema is
given as a mapping (``conf/data/schema/*.yaml``) or as the path of a YAML file written by
``python -m pricenet.schema``.

A *stored* source (the ``data.source`` of a run folder's ``config.yaml``, which may come from
anyone) is data, never code: :func:`load_stored_source` accepts only these two sources, by
their exact ``_target_``, checks every argument as a plain value and calls the function
itself. Nothing there goes through ``instantiate`` or resolves an interpolation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pricenet.errors import ConfigError, shown, user_error
from pricenet.stored import (
    describe,
    is_int,
    is_number,
    load_plain_yaml,
    plain,
    refuse_code_nodes,
)
from pricenet.tables.read import DEFAULT_MAX_BYTES, MAX_CATEGORIES, read_table
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


# conf/data/csv.yaml's label, the phone data's: with a schema that names another label it is
# the default nobody chose, so the schema's label wins; any other disagreement is an error.
DEFAULT_LABEL = "price_range"
# The embedded generator is a demo table: 1,000,000 rows take 160 MB; more would only exhaust
# the memory of whoever asked (or whoever opened a crafted run folder).
MAX_SYNTHETIC_ROWS = 1_000_000


def csv(
    path: str,
    schema: Mapping | str | Schema | None = None,
    label: str | None = None,
    id: str | None = None,
    missing: str = "error",
    ranges: str = "error",
    max_bytes: int = DEFAULT_MAX_BYTES,
    group: str | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> Table:
    """``data=csv``: the file at ``path``, validated against ``schema`` (None: inferred, a
    text column with at most ``max_categories`` values a category); ``group`` names the
    column whose values group rows (``data.group``). A ``.parquet`` path is read as Parquet
    (:func:`~pricenet.tables.read.read_table`)."""
    resolved = resolve_schema(schema)
    if resolved is not None and label in (resolved.label, DEFAULT_LABEL):
        label = None  # the schema names it
    return read_table(
        path,
        resolved,
        label=label,
        id=id,
        missing=missing,
        ranges=ranges,
        max_bytes=max_bytes,
        group=group,
        max_categories=max_categories,
    )


def synthetic(n_rows: int = 2000, noise: float = 0.05, seed: int = 0) -> Table:
    """``data=synthetic``: the seeded phone-price generator (schema ``mobile_price``)."""
    if n_rows > MAX_SYNTHETIC_ROWS:
        raise ConfigError(
            f"data.n_rows={n_rows}: the synthetic generator makes at most "
            f"{MAX_SYNTHETIC_ROWS:,} rows"
        )
    return make_synthetic(n_rows, noise, seed)


# --------------------------------------------------------------------------- stored sources


def _is_name(value: Any) -> bool:
    return value is None or (isinstance(value, str) and 0 < len(value) <= 1000)


# The sources a stored config may name, by their exact ``_target_``, and the plain value each
# argument must be: (what is expected, the check). Nothing else in a stored source is used.
Argument = tuple[str, Callable[[Any], bool]]
STORED_SOURCES: dict[str, tuple[Callable[..., Table], dict[str, Argument], tuple[str, ...]]] = {
    "pricenet.tables.sources.csv": (
        csv,
        {
            "path": ("a file path", lambda v: isinstance(v, str) and 0 < len(v) <= 4096),
            "schema": (
                "a schema mapping, a YAML file's path or null",
                lambda v: v is None or isinstance(v, Mapping) or isinstance(v, str) and v != "",
            ),
            "label": ("a column name or null", _is_name),
            "id": ("a column name or null", _is_name),
            "missing": ("error or impute", lambda v: v in ("error", "impute")),
            "ranges": ("error, warn or ignore", lambda v: v in ("error", "warn", "ignore")),
            "max_bytes": ("a size in bytes >= 1", lambda v: is_int(v) and v >= 1),
            "group": ("a column name or null", _is_name),
            "max_categories": ("an integer >= 1", lambda v: is_int(v) and v >= 1),
        },
        ("path",),
    ),
    "pricenet.tables.sources.synthetic": (
        synthetic,
        {
            "n_rows": (
                f"an integer in 8..{MAX_SYNTHETIC_ROWS}",
                lambda v: is_int(v) and 8 <= v <= MAX_SYNTHETIC_ROWS,
            ),
            "noise": ("a finite number >= 0", lambda v: is_number(v) and v >= 0),
            "seed": ("an integer in 0..2**63-1", lambda v: is_int(v) and 0 <= v < 2**63),
        },
        (),
    ),
}


def load_stored_source(node: Any, where: str) -> Table:
    """The table a stored ``data.source`` describes, built without ``instantiate``: its
    ``_target_`` must be one of :data:`STORED_SOURCES` (the exact string), each argument a
    plain value of the right type, a schema plain data (a file it names is read as such)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: expected a data source mapping, got {describe(node)}")
    target = node.get("_target_")
    if not isinstance(target, str) or target not in STORED_SOURCES:
        raise ConfigError(
            f"{where}._target_: {describe(target)} is not one of {', '.join(STORED_SOURCES)}; "
            "pass data=<a labelled CSV>"
        )
    function, arguments, required = STORED_SOURCES[target]
    unknown = [str(key) for key in node if key != "_target_" and key not in arguments]
    if unknown:
        raise ConfigError(
            f"{where}: unexpected key {describe(unknown[0])}; allowed: {', '.join(arguments)}"
        )
    absent = [key for key in required if key not in node]
    if absent:
        raise ConfigError(f"{where}.{absent[0]}: missing")
    values = {
        key: plain(node[key], f"{where}.{key}", expected, ok)
        for key, (expected, ok) in arguments.items()
        if key in node
    }
    schema = values.get("schema")
    if isinstance(schema, str):
        at = f"{where}.schema={shown(schema[:200])}"
        schema = load_plain_yaml(schema, at)
    else:
        at = f"{where}.schema"
    if schema is not None:
        refuse_code_nodes(schema, at)
        values["schema"] = Schema.from_dict(schema, at)
    return function(**values)


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
