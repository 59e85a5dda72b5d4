"""The phone-price table: schema, synthetic generator, validated CSV loader, split and scaler."""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pricenet.errors import DataError

log = logging.getLogger(__name__)

LABEL = "price_range"
ID = "id"
NUM_CLASSES = 4


@dataclass(frozen=True)
class Feature:
    """One input column of the Kaggle schema with its real range."""

    name: str
    low: float
    high: float
    integer: bool = True

    @property
    def binary(self) -> bool:
        return self.integer and self.low == 0 and self.high == 1


SCHEMA: tuple[Feature, ...] = (
    Feature("battery_power", 501, 1998),
    Feature("blue", 0, 1),
    Feature("clock_speed", 0.5, 3.0, integer=False),
    Feature("dual_sim", 0, 1),
    Feature("fc", 0, 19),
    Feature("four_g", 0, 1),
    Feature("int_memory", 2, 64),
    Feature("m_dep", 0.1, 1.0, integer=False),
    Feature("mobile_wt", 80, 200),
    Feature("n_cores", 1, 8),
    Feature("pc", 0, 20),
    Feature("px_height", 0, 1960),
    Feature("px_width", 500, 1998),
    Feature("ram", 256, 3998),
    Feature("sc_h", 5, 19),
    Feature("sc_w", 0, 18),
    Feature("talk_time", 2, 20),
    Feature("three_g", 0, 1),
    Feature("touch_screen", 0, 1),
    Feature("wifi", 0, 1),
)
FEATURES: tuple[str, ...] = tuple(f.name for f in SCHEMA)


@dataclass
class Table:
    """Rows in schema order: ``features`` (n, 20) float32, ``labels`` (n,) int64 or None."""

    features: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray | None = None
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.features)

    def to_frame(self, with_labels: bool = True):
        """The table as a pandas DataFrame in the Kaggle layout (ints where the schema has ints)."""
        import pandas as pd

        frame = pd.DataFrame(self.features, columns=list(FEATURES))
        for feature in SCHEMA:
            if feature.integer:
                frame[feature.name] = frame[feature.name].round().astype("int64")
            else:
                frame[feature.name] = frame[feature.name].astype("float64").round(1)
        if self.ids is not None:
            frame.insert(0, ID, self.ids)
        if with_labels and self.labels is not None:
            frame[LABEL] = self.labels
        return frame


# --------------------------------------------------------------------------- synthetic data


def make_synthetic(n_rows: int = 2000, noise: float = 0.05, seed: int = 0) -> Table:
    """A seeded, deterministic table with the Kaggle schema and balanced ``price_range``.

    The price is driven by a latent score dominated by ``ram``, then ``battery_power``,
    ``px_height`` and ``px_width``, plus Gaussian ``noise``; the classes are its quartiles.
    """
    if n_rows < 8:
        raise DataError(f"data.n_rows={n_rows}: the synthetic generator needs at least 8 rows")
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for f in SCHEMA:
        if f.integer:
            cols[f.name] = rng.integers(int(f.low), int(f.high) + 1, n_rows).astype(np.float64)
        else:
            steps = int(round((f.high - f.low) * 10))
            cols[f.name] = f.low + rng.integers(0, steps + 1, n_rows) / 10.0
    # Plausible dependencies seen in the real data.
    cols["three_g"] = np.maximum(cols["three_g"], cols["four_g"])
    cols["px_height"] = np.floor(rng.random(n_rows) * (cols["px_width"] - 1))
    cols["sc_w"] = np.floor(rng.random(n_rows) * cols["sc_h"])
    cols["fc"] = np.minimum(cols["fc"], cols["pc"])

    def z(name: str) -> np.ndarray:
        v = cols[name]
        return (v - v.mean()) / (v.std() + 1e-12)

    score = (
        1.0 * z("ram")
        + 0.25 * z("battery_power")
        + 0.15 * z("px_height")
        + 0.15 * z("px_width")
        + noise * rng.standard_normal(n_rows)
    )
    ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable")
    labels = (ranks * NUM_CLASSES // n_rows).astype(np.int64)
    features = np.stack([cols[name] for name in FEATURES], axis=1).astype(np.float32)
    return Table(features, labels, source=f"synthetic(n_rows={n_rows}, seed={seed})")


# --------------------------------------------------------------------------- CSV loading

# Cells that mean "no value" in common exports; reported as missing, never parsed as NaN.
_MISSING = frozenset({"nan", "-nan", "na", "n/a", "null", "none", "#n/a"})
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INFINITE = re.compile(r"[+-]?inf(?:inity)?", re.IGNORECASE)
_LARGEST = float(np.finfo(np.float32).max)  # features are float32: beyond this they are inf


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a BOM dropped), or a :class:`DataError` saying why not."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def _records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records, each with the line it starts on (quoted newlines count)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if fields and not (len(fields) == 1 and not fields[0].strip()):
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {start}: malformed CSV ({err})") from None
    return records


def _column_indices(path: Path, header: list[str], line: int, require_label: bool) -> list[int]:
    """Position of each schema column (and the label, when present) in ``header``."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name and name in seen:
            raise DataError(f"{path}: column {name!r}, line {line}: appears more than once")
        seen[name] = i
    required = [*FEATURES, LABEL] if require_label else list(FEATURES)
    missing = [name for name in required if name not in seen]
    if missing:
        word = "column" if len(missing) == 1 else "columns"
        raise DataError(
            f"{path}: {word} {', '.join(map(repr, missing))}, line {line}: missing from the header"
        )
    extra = [
        repr(name) if name else f"unnamed column {i + 1}"
        for i, name in enumerate(header)
        if name not in (*FEATURES, LABEL, ID)
    ]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(extra))
    return [seen[name] for name in FEATURES] + ([seen[LABEL]] if LABEL in seen else [])


def _cell_value(cell: str, feature: Feature | None) -> float | str:
    """The cell as a number, or what is wrong with it (``feature`` None means the label)."""
    text = cell.strip()
    shown = repr(text if len(text) <= 30 else text[:27] + "...")
    if not text:
        return "empty cell"
    if text.lower() in _MISSING:
        return f"{shown} is a missing value"
    if _INFINITE.fullmatch(text):
        return f"{shown} is not finite"
    if not _NUMBER.fullmatch(text):
        return f"{shown} is not a number"
    value = float(text)
    if math.isinf(value):
        return f"{shown} is not finite"
    if abs(value) > _LARGEST:
        return f"{shown} is too large (beyond float32's range)"
    if feature is None:
        if value != round(value) or not 0 <= value < NUM_CLASSES:
            return f"label {shown} is not an integer in 0..{NUM_CLASSES - 1}"
    elif feature.binary and value not in (0, 1):
        return f"{shown} is not 0 or 1"
    elif feature.integer and value != round(value):
        return f"{shown} is not an integer"
    return value


def read_csv(path: str | Path, require_label: bool = True) -> Table:
    """Read and validate a CSV in the Kaggle train.csv (or test.csv) layout.

    Columns may come in any order; ``id`` is kept, other unknown columns are ignored with a
    warning. A UTF-8 BOM, CRLF line endings and blank lines are accepted. Every problem
    raises :class:`DataError` as ``<file>: column '<name>', line <n>: <what is wrong>``
    (the parts that apply), stopping at the first problem in reading order.
    """
    path = Path(path).expanduser()
    records = _records(path, _read_text(path))
    header_line, raw_header = records[0]
    header = [name.strip() for name in raw_header]
    indices = _column_indices(path, header, header_line, require_label)
    if len(records) == 1:
        raise DataError(f"{path}: has a header but no data rows")

    names = [*FEATURES, LABEL][: len(indices)]
    kinds: list[Feature | None] = [*SCHEMA, None][: len(indices)]
    values = np.empty((len(records) - 1, len(indices)), dtype=np.float64)
    for row, (line, fields) in enumerate(records[1:]):
        if len(fields) != len(header):
            raise DataError(
                f"{path}: line {line}: {len(fields)} fields, but the header has {len(header)}"
            )
        for col, (index, name, kind) in enumerate(zip(indices, names, kinds, strict=True)):
            value = _cell_value(fields[index], kind)
            if isinstance(value, str):
                raise DataError(f"{path}: column {name!r}, line {line}: {value}")
            values[row, col] = value

    features = values[:, : len(FEATURES)].astype(np.float32)
    labels = values[:, len(FEATURES)].astype(np.int64) if len(indices) > len(FEATURES) else None
    ids = None
    if ID in header:
        ids = np.array([fields[header.index(ID)].strip() for _, fields in records[1:]])
    return Table(features, labels, ids, source=str(path))


# --------------------------------------------------------------------------- table cache

# Jobs of a sweep share a process (basic launcher) or a few workers (joblib): each source is
# generated, or read and validated, once per process. A few entries bound the memory.
_TABLES: OrderedDict[tuple[Any, ...], Table] = OrderedDict()
_TABLES_KEPT = 4


def load_table(source: dict[str, Any]) -> Table:
    """The table that ``source`` (a ``_target_`` config, resolved) builds, cached per process.

    The key is the source config plus, for a file, its size and modification time, so an
    edited CSV is read again. Every call returns fresh arrays: no job can alter another's data.
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
        table = instantiate(source)
        _TABLES[key] = table
        if len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return replace(
        table,
        features=table.features.copy(),
        labels=None if table.labels is None else table.labels.copy(),
        ids=None if table.ids is None else table.ids.copy(),
    )


# --------------------------------------------------------------------------- split and scaler


def stratified_split(
    labels: np.ndarray, val_size: float, test_size: float, seed: int, *, source: str = "data"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split: every class keeps its share in each part.

    ``source`` (the file) prefixes the :class:`DataError` raised when the labels cannot be split.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) == 0:
        raise DataError(f"{source}: no rows to split")
    if len(classes) < 2:
        raise DataError(
            f"{source}: column {LABEL!r}: every row has class {int(classes[0])}; "
            "at least two classes are needed to train"
        )
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls, count in zip(classes, counts, strict=True):
        n_test = int(round(count * test_size))
        n_val = int(round(count * val_size))
        need = [
            test_size > 0 and n_test < 1,
            val_size > 0 and n_val < 1,
            count - n_test - n_val < 1,
        ]
        if any(need):
            raise DataError(
                f"{source}: column {LABEL!r}: too few rows to split stratified: class {int(cls)} "
                f"has {count} row(s), which cannot be shared between train, "
                f"val (data.val_size={val_size}) and test (data.test_size={test_size})"
            )
        idx = rng.permutation(np.flatnonzero(labels == cls))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


class Standardizer:
    """Per-feature ``(x - mean) / std`` fitted on the training split only."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardizer:
        std = x.std(dim=0, unbiased=False)
        return cls(x.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)))

    @classmethod
    def identity(cls, n_features: int) -> Standardizer:
        return cls(torch.zeros(n_features), torch.ones(n_features))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Standardizer:
        return cls(state["mean"], state["std"])


@dataclass
class Splits:
    """Standardized tensors on the run's device, plus what produced them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    scaler: Standardizer
    table: Table
    index: dict[str, np.ndarray]


def make_splits(
    table: Table,
    val_size: float,
    test_size: float,
    standardize: bool,
    seed: int,
    device: torch.device | str = "cpu",
) -> Splits:
    """Split ``table`` stratified, fit the scaler on train only, move everything to ``device``."""
    if table.labels is None:
        raise DataError(f"{table.source}: no {LABEL!r} column, so it cannot be used for training")
    train, val, test = stratified_split(
        table.labels, val_size, test_size, seed, source=table.source
    )
    return splits_from_indices(
        table, {"train": train, "val": val, "test": test}, standardize, device
    )


def splits_from_indices(
    table: Table,
    index: dict[str, np.ndarray],
    standardize: bool,
    device: torch.device | str = "cpu",
) -> Splits:
    """Tensors for given ``train``/``val``/``test`` row indices (e.g. cross-validation folds)."""
    x = torch.from_numpy(table.features)
    y = torch.from_numpy(table.labels)
    scaler = (
        Standardizer.fit(x[index["train"]]) if standardize else Standardizer.identity(x.shape[1])
    )
    xs = scaler(x)
    parts = [t[index[k]].to(device) for k in ("train", "val", "test") for t in (xs, y)]
    return Splits(*parts, scaler, table, index)
