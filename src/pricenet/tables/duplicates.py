"""Rows whose feature values repeat another row's: found at load, then grouped, kept or dropped.

Real tables repeat rows (a measurement taken twice, a product listed twice). Under a plain
row split a duplicate's twin sits in the training rows most of the time, and a model that
memorises looks better than it is. The scan hashes each row's feature values as validated
(the raw values the schema reads, before any scaling) with pandas' row hash, so it costs a
fraction of the read; two rows are one *set* when their 64-bit hashes agree.

``data.duplicates`` is the policy: ``group`` (default) keeps each set on one side of every
split, ``keep`` splits them like any rows (and the report counts the leak), ``drop`` keeps the
first row of each set and refuses a set whose labels disagree, ``error`` refuses them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from pricenet.errors import DataError
from pricenet.tables.table import Table

log = logging.getLogger("pricenet")


@dataclass(frozen=True)
class Duplicates:
    """The scan of one table: ``codes[i]`` names row ``i``'s set (equal codes, equal features)."""

    codes: np.ndarray
    rows: int  # rows that repeat an earlier row's features (every row of a set but its first)
    sets: int  # sets of two or more identical feature rows
    conflicting: int  # sets whose rows carry more than one label
    policy: str
    dropped: int = 0

    @property
    def share(self) -> float:
        return self.rows / len(self.codes) if len(self.codes) else 0.0

    def report(self) -> dict[str, float | int | str]:
        """The ``duplicates`` block of metrics.json."""
        return {
            "policy": self.policy,
            "rows": self.rows,
            "share": self.share,
            "sets": self.sets,
            "conflicting_sets": self.conflicting,
            "dropped": self.dropped,
        }


def scan(table: Table, policy: str = "group") -> Duplicates:
    """Hash every row's feature values and count the rows, sets and label conflicts."""
    import pandas as pd  # here: the config check imports POLICIES from this module

    hashes = pd.util.hash_pandas_object(table.frame, index=False).to_numpy()
    codes, uniques = pd.factorize(hashes)
    codes = codes.astype(np.int64)
    sizes = np.bincount(codes, minlength=len(uniques))
    conflicting = 0
    if table.labels is not None and len(uniques) < len(codes):
        pairs = np.unique(codes * (int(table.labels.max()) + 1) + table.labels)
        labels_per_set = np.bincount(pairs // (int(table.labels.max()) + 1))
        conflicting = int((labels_per_set > 1).sum())
    return Duplicates(
        codes=codes,
        rows=len(codes) - len(uniques),
        sets=int((sizes > 1).sum()),
        conflicting=conflicting,
        policy=policy,
    )


def _rows_of(codes: np.ndarray, code: int, limit: int = 5) -> str:
    rows = np.flatnonzero(codes == code)[:limit] + 1
    return ", ".join(map(str, rows.tolist()))


POLICIES = ("group", "keep", "drop", "error")
"""``data.duplicates``: what to do with rows whose features repeat another row's."""


def apply_policy(table: Table, policy: str) -> tuple[Table, Duplicates]:
    """The table as ``policy`` leaves it, and its scan; logs one line when rows repeat.

    Rows are named by their 1-based position among the data rows (the line after the header
    for a CSV without blank lines).
    """
    import pandas as pd

    if policy not in POLICIES:  # config.validate names the key
        raise ValueError(f"unknown duplicates policy {policy!r}")
    found = scan(table, policy)
    if found.rows == 0:
        return table, found
    said = f"{found.rows} rows ({100 * found.share:.1f}%) repeat another row's features"
    if found.conflicting:
        said += f" ({found.conflicting} set(s) with different labels)"
    codes = found.codes
    if policy == "error":
        first = int(codes[np.flatnonzero(pd.Series(codes).duplicated().to_numpy())[0]])
        raise DataError(
            f"{table.source}: {said}, e.g. rows {_rows_of(codes, first)} "
            "(data.duplicates=error; group, keep or drop them instead)"
        )
    if policy == "drop":
        if found.conflicting:
            bad = _first_conflict(codes, table.labels)
            raise DataError(
                f"{table.source}: rows {_rows_of(codes, bad)} have the same features but "
                f"different labels in column {table.schema.label!r}, and data.duplicates=drop "
                "cannot choose one; fix them, or use data.duplicates=group"
            )
        keep = ~pd.Series(codes).duplicated().to_numpy()
        table = replace(
            table,
            frame=table.frame[keep].reset_index(drop=True),
            labels=None if table.labels is None else table.labels[keep],
            ids=None if table.ids is None else table.ids[keep],
            groups=None if table.groups is None else table.groups[keep],
        )
        log.info("%s; dropped, keeping the first of each set (data.duplicates=drop)", said)
        return table, replace(found, codes=pd.factorize(codes[keep])[0], dropped=found.rows)
    if policy == "group":
        log.info("%s; CV keeps each set in one fold (data.duplicates=group)", said)
    else:
        log.warning(
            "%s; they are split like any rows (data.duplicates=keep): held-out scores flatter "
            "models that memorise",
            said,
        )
    return table, found


def _first_conflict(codes: np.ndarray, labels: np.ndarray) -> int:
    import pandas as pd

    frame = pd.DataFrame({"code": codes, "label": labels})
    counts = frame.groupby("code", sort=False)["label"].nunique()
    return int(counts.index[(counts > 1).to_numpy()][0])


def seen_in_training(codes: np.ndarray, held: np.ndarray, seen: np.ndarray) -> int:
    """How many ``held`` rows have an identical feature row among the ``seen`` rows."""
    if len(held) == 0 or len(seen) == 0:
        return 0
    return int(np.isin(codes[held], codes[seen]).sum())
