"""Tables of any schema: schema, CSV/DataFrame validation, inference, preprocessing, splits.

``schema`` describes a table (features, kinds, ranges, label, classes); ``read_csv`` and
``validate_frame`` turn a file or a DataFrame into a validated :class:`Table` through one
validator; ``infer_schema`` writes a schema for an unknown table; ``Preprocessor`` turns a
table into model inputs from training rows only; ``splits`` gives stratified splits and folds
(scikit-learn's, keeping groups whole); ``duplicates`` finds rows whose features repeat.
"""

from pricenet.tables.prep import Preprocessor
from pricenet.tables.read import DEFAULT_MAX_BYTES, infer_schema, read_csv
from pricenet.tables.schema import MOBILE_PRICE, Feature, Schema
from pricenet.tables.splits import grouped_split, stratified_kfold, stratified_split
from pricenet.tables.synthetic import make_synthetic
from pricenet.tables.table import Table
from pricenet.tables.validate import validate_frame

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
