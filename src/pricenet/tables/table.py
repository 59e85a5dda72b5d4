"""A validated table: feature columns in schema order, label indices, ids, and its schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pricenet.tables.schema import Schema

if TYPE_CHECKING:
    import pandas as pd

    from pricenet.tables.duplicates import Duplicates


@dataclass
class Table:
    """Rows that passed validation against ``schema``.

    ``frame`` holds the feature columns in schema order: numeric, integer and binary as
    float64 (NaN = missing, possible only under ``missing="impute"``), categorical as object
    strings (None = missing). ``labels`` are int64 indices into ``schema.classes`` (None when
    the input had no label column); ``ids`` are the id column's values, if it had one.
    ``groups`` are the ``data.group`` column's values (not a feature: rows of one group stay
    on one side of every split); ``duplicates`` is the scan of repeated feature rows, set
    when the table is loaded for training (:mod:`pricenet.tables.duplicates`).
    """

    frame: pd.DataFrame
    labels: np.ndarray | None
    ids: np.ndarray | None
    schema: Schema
    source: str = "<memory>"
    groups: np.ndarray | None = None
    duplicates: Duplicates | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def numeric_array(self, dtype: type = np.float32) -> np.ndarray:
        """The numeric-kind columns as an (n, k) array (categorical columns left out)."""
        names = [f.name for f in self.schema.features if f.numeric]
        return self.frame[names].to_numpy(dtype=dtype)

    def to_frame(self, with_labels: bool = True) -> pd.DataFrame:
        """The table in its original layout: id, features, label (original class values).

        Integer and binary columns come back as int64 (nullable Int64 when some are missing),
        so the frame can be written as a CSV that reads back to the same table.
        """
        import pandas as pd

        out = pd.DataFrame(index=range(len(self.frame)))
        if self.ids is not None:
            out[self.schema.id or "id"] = self.ids
        for feature in self.schema.features:
            column = self.frame[feature.name].reset_index(drop=True)
            if feature.kind in ("integer", "binary"):
                rounded = column.round()
                dtype = "Int64" if rounded.isna().any() else "int64"
                out[feature.name] = rounded.astype(dtype)
            elif feature.kind == "numeric":
                out[feature.name] = column.astype("float64")
            else:
                out[feature.name] = column.astype(object)
        if with_labels and self.labels is not None:
            out[self.schema.label] = self.schema.decode_labels(self.labels)
        return out
