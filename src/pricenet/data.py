"""The phone-price table: schema, synthetic generator, validated CSV loader, split and scaler."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

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


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def _check_header(path: Path, header: list[str], require_label: bool) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears more than once in the header")
        seen.add(name)
    required = list(FEATURES) + ([LABEL] if require_label else [])
    missing = [c for c in required if c not in seen]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))}")
    extra = [c for c in header if c not in required and c not in (ID, LABEL)]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(map(repr, extra)))


def _numeric_column(path: Path, frame, name: str) -> np.ndarray:
    """Parse one column of strings to float64, naming the first bad cell."""
    import pandas as pd

    raw = frame[name]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        cell = raw.iloc[row]
        what = (
            "is empty"
            if cell.strip() == "" or cell.strip().lower() in ("nan", "na", "null", "none")
            else "is infinite"
            if np.isinf(values[row])
            else f"{cell.strip()[:30]!r} is not a number"
        )
        raise DataError(f"{path}: column {name!r}, line {row + 2}: value {what}")
    return values


def read_csv(path: str | Path, require_label: bool = True) -> Table:
    """Read and validate a CSV in the Kaggle train.csv (or test.csv) layout.

    Columns may come in any order; ``id`` is kept, other unknown columns are ignored with a
    warning. Every problem raises :class:`DataError` naming the file, column and line.
    """
    import pandas as pd

    path = Path(path).expanduser()
    text = _read_text(path)
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed CSV ({str(err).strip().splitlines()[-1]})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    header = [str(c).strip() for c in frame.columns]
    first_line = text.splitlines()[0].split(",")
    if len(first_line) != len(set(c.strip() for c in first_line)):
        dupes = sorted({c.strip() for c in first_line if first_line.count(c) > 1})
        raise DataError(f"{path}: column {dupes[0]!r} appears more than once in the header")
    frame.columns = header
    _check_header(path, header, require_label)
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no data rows")

    columns = []
    for feature in SCHEMA:
        values = _numeric_column(path, frame, feature.name)
        if feature.integer:
            off = np.flatnonzero(values != np.round(values))
            if off.size:
                row = int(off[0])
                raise DataError(
                    f"{path}: column {feature.name!r}, line {row + 2}: "
                    f"{frame[feature.name].iloc[row].strip()!r} is not an integer"
                )
        if feature.binary:
            off = np.flatnonzero((values != 0) & (values != 1))
            if off.size:
                row = int(off[0])
                raise DataError(
                    f"{path}: column {feature.name!r}, line {row + 2}: "
                    f"{frame[feature.name].iloc[row].strip()!r} is not 0 or 1"
                )
        columns.append(values)
    features = np.stack(columns, axis=1).astype(np.float32)

    labels = None
    if LABEL in frame.columns:
        values = _numeric_column(path, frame, LABEL)
        off = np.flatnonzero((values != np.round(values)) | (values < 0) | (values >= NUM_CLASSES))
        if off.size:
            row = int(off[0])
            raise DataError(
                f"{path}: column {LABEL!r}, line {row + 2}: label "
                f"{frame[LABEL].iloc[row].strip()!r} is not an integer in 0..{NUM_CLASSES - 1}"
            )
        labels = values.astype(np.int64)
    ids = frame[ID].str.strip().to_numpy() if ID in frame.columns else None
    return Table(features, labels, ids, source=str(path))


# --------------------------------------------------------------------------- split and scaler


def stratified_split(
    labels: np.ndarray, val_size: float, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split: every class keeps its share in each part."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"{LABEL} holds a single class ({int(classes[0])}); at least two are needed to train"
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
                f"too few rows to split stratified: class {int(cls)} has {count} row(s), which "
                f"cannot be shared between train, val ({val_size}) and test ({test_size})"
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
    train, val, test = stratified_split(table.labels, val_size, test_size, seed)
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
