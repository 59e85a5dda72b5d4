"""Tables of any schema: schema, CSV/DataFrame validation, inference, preprocessing, splits.

``schema`` describes a table (features, kinds, ranges, label, classes); ``read_csv`` and
``validate_frame`` turn a file or a DataFrame into a validated :class:`Table` through one
validator; ``infer_schema`` writes a schema for an unknown table; ``Preprocessor`` turns a
table into model inputs from training rows only; ``splits`` gives stratified splits and folds
(scikit-learn's, keeping groups whole); ``duplicates`` finds rows whose features repeat.

The names below are loaded on first use (PEP 562): importing the package, or a reader such as
:mod:`pricenet.tables.read`, does not import torch (only ``Preprocessor`` needs it).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pricenet.tables.prep import Preprocessor
    from pricenet.tables.read import DEFAULT_MAX_BYTES, infer_schema, read_csv
    from pricenet.tables.schema import MOBILE_PRICE, Feature, Schema
    from pricenet.tables.splits import grouped_split, stratified_kfold, stratified_split
    from pricenet.tables.synthetic import make_synthetic
    from pricenet.tables.table import Table
    from pricenet.tables.validate import validate_frame

_HOMES: dict[str, str] = {
    "DEFAULT_MAX_BYTES": "read",
    "MOBILE_PRICE": "schema",
    "Feature": "schema",
    "Preprocessor": "prep",
    "Schema": "schema",
    "Table": "table",
    "grouped_split": "splits",
    "infer_schema": "read",
    "make_synthetic": "synthetic",
    "read_csv": "read",
    "stratified_kfold": "splits",
    "stratified_split": "splits",
    "validate_frame": "validate",
}
"""Each exported name -> the submodule it lives in."""

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MOBILE_PRICE",
    "Feature",
    "Preprocessor",
    "Schema",
    "Table",
    "grouped_split",
    "infer_schema",
    "make_synthetic",
    "read_csv",
    "stratified_kfold",
    "stratified_split",
    "validate_frame",
]


def __getattr__(name: str) -> Any:
    """Import an exported name's submodule the first time the name is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
