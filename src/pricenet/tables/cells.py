"""What is wrong with one cell: the wording every validator shares.

The messages match the hand-written loader this package replaces (``'abc' is not a number``,
``empty cell``, ``'NA' is a missing value``, ...), so error quality stays the same.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

# Cells that mean "no value" in common exports; reported as missing, never parsed as NaN.
MISSING_TOKENS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "#n/a"})
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INFINITE = re.compile(r"[+-]?inf(?:inity)?", re.IGNORECASE)
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
LARGEST = float(np.finfo(np.float32).max)  # models see float32: beyond this is inf


def shown(text: str) -> str:
    """The cell as quoted in a message (long text shortened)."""
    text = text.strip()
    return repr(text if len(text) <= 30 else text[:27] + "...")


def is_missing(value: Any) -> bool:
    """True for an empty cell, a missing-value token (NA, null, ...), None or NaN."""
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are not equal to themselves
    except (TypeError, ValueError):  # pd.NA != pd.NA is pd.NA, whose truth is an error
        import pandas as pd

        return value is pd.NA


def describe_text(cell: str) -> str | None:
    """What keeps text ``cell`` from being a finite float32 number, or None if it is one."""
    text = cell.strip()
    if not text:
        return "empty cell"
    if text.lower() in MISSING_TOKENS:
        return f"{shown(text)} is a missing value"
    if _INFINITE.fullmatch(text):
        return f"{shown(text)} is not finite"
    if not NUMBER.fullmatch(text):
        hint = " (a decimal comma? write it with a point)" if _DECIMAL_COMMA.fullmatch(text) else ""
        return f"{shown(text)} is not a number{hint}"
    value = float(text)
    if math.isinf(value):
        return f"{shown(text)} is not finite"
    if abs(value) > LARGEST:
        return f"{shown(text)} is too large (beyond float32's range)"
    return None


def describe_value(value: Any) -> str | None:
    """Like :func:`describe_text` for any cell a DataFrame may hold (text, number, None...)."""
    if isinstance(value, str):
        return describe_text(value)
    if is_missing(value):
        return f"{value!r} is a missing value"
    if isinstance(value, bool | np.bool_):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return f"{shown(repr(value))} is not a number"
    if math.isinf(number):
        return f"{shown(number_text(value))} is not finite"
    if abs(number) > LARGEST:
        return f"{shown(number_text(value))} is too large (beyond float32's range)"
    return None


def number_text(value: Any) -> str:
    """A number as a user wrote it, near enough: ``7`` for 7.0, else ``str``."""
    if (
        isinstance(value, float | np.floating)
        and math.isfinite(value)
        and value == int(value)
        and abs(value) < 1e16
    ):
        return str(int(value))
    return str(value)


def to_float(series: Any) -> np.ndarray:
    """float64 values of a column of mixed cells; what is not a number becomes NaN.

    Numbers pandas' parser accepts but the strict notation does not (``0x1f``, ``1_000``)
    also become NaN, so they are reported rather than guessed.
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, copy=True)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    objects = series.astype(object)
    is_text = objects.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    out = np.full(len(objects), np.nan)
    if is_text.any():
        text = objects[is_text].astype(str).str.strip()
        strict = text.str.fullmatch(NUMBER.pattern).to_numpy(dtype=bool, na_value=False)
        parsed = pd.to_numeric(text.where(strict, "nan"), errors="coerce")
        out[np.flatnonzero(is_text)] = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    others = ~is_text
    if others.any():
        out[others] = [_as_float(v) for v in objects[others]]
    return out


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def escape_formula(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula
    (it starts with ``= + - @``, tab or CR and is not a plain number such as ``-1.5``);
    anything else unchanged. OWASP's rule for CSV injection."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def escape_formulas_in(frame: Any) -> Any:
    """A copy of DataFrame ``frame`` with :func:`escape_formula` applied to its text columns
    (numeric columns are never touched); ``frame`` itself when nothing needs escaping."""
    import pandas as pd

    out = frame
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            continue
        text = column.astype("string").str
        candidates = text.startswith(FORMULA_STARTS).fillna(False).to_numpy(dtype=bool)
        if not candidates.any():
            continue
        fixed = column.astype(object)  # a copy; only the candidates go through Python
        fixed[candidates] = column[candidates].map(escape_formula)
        out = out.copy() if out is frame else out
        out[name] = fixed
    return out
