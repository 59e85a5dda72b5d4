"""The Predictor: a trained checkpoint (one model or an ensemble) with its schema and
preprocessing, loaded once; predictions as a DataFrame, probabilities, one traceable module.

    predictor = Predictor.from_checkpoint("outputs/runs/<run>")
    predictor.predict(frame)         # DataFrame: id, <label>, prob_<class> per class
    predictor.predict(row)           # one row: a Series or a dict {column: value}
    predictor.predict_proba(frame)   # (n, K) numpy array

A checkpoint is untrusted input: it is loaded with ``weights_only=True`` and rebuilt through
:func:`pricenet.checkpoints.restore.restore_model` (closed registries, every value checked), so it
cannot run code. Inputs are validated against the checkpoint's schema by the same validator as
training data. A checkpoint of several members (a cross-validated run's fold models, or
seed repeats) predicts as one ensemble: each member scales the rows with its own
preprocessor and calibrates with its own temperature, and their outputs are combined in the
head's space (averaged probabilities). The model runs over at most :data:`PREDICT_ROWS` rows
at a time (the rows a stored network's activation budget is checked for), so a large table
costs the memory of its outputs, not of its activations; in eval mode each row's result is
the same whatever rows share its pass. The ``pricenet-predict`` command is
:mod:`pricenet.predict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pricenet.checkpoints.checkpoint import load_checkpoint, resolve_checkpoint
from pricenet.checkpoints.restore import Restored, restore_model
from pricenet.config.seed import resolve_device
from pricenet.errors import CheckpointError, ConfigError, DataError, first_line, shown
from pricenet.nn.spec import PREDICT_ROWS
from pricenet.tables import Table, validate_frame
from pricenet.tables.prep import MISSING_CODE as MISSING_CODE
from pricenet.tables.prep import UNKNOWN_CODE as UNKNOWN_CODE
from pricenet.tables.prep import PreprocessModule
from pricenet.tables.read import read_table
from pricenet.tables.validate import OVERFLOW_SIGMAS, limit_overflow

if TYPE_CHECKING:
    import pandas as pd


class Predictor:
    """A trained model (or ensemble) with its schema and preprocessing, loaded once."""

    def __init__(self, restored: Restored, device: torch.device) -> None:
        self.network = restored.network.to(device).eval()
        self.head = restored.head
        self.schema = restored.schema
        self.preprocessors = restored.preprocessors
        self.preprocess = PreprocessModule(self.preprocessors).to(device)
        self.temperatures = torch.tensor(restored.temperatures, dtype=torch.float32)
        self.device = device
        self.members = restored.spec.members
        self.feature_names = list(self.schema.feature_names)
        self.label_name = self.schema.label
        self.class_labels = list(self.schema.classes)
        self.categorical_features = [
            f.name for f in self.schema.features if f.kind == "categorical"
        ]
        self.id_name = self.schema.id or "id"
        self.missing = self.preprocessors[0].missing
        self.chunk_rows = PREDICT_ROWS  # rows per forward pass

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """Load ``path`` (a ``.pt`` file or a run folder, whose ``best.pt`` is used)."""
        where = resolve_checkpoint(path)
        restored, target = restore_model(load_checkpoint(where), where), resolve_device(device)
        try:
            return cls(restored, target)
        except ConfigError as err:  # members whose preprocessing cannot share one module
            raise CheckpointError(f"{where}: {err}") from None

    # ------------------------------------------------------------------ inputs

    def table(self, frame: Any, ranges: str = "warn") -> Table:
        """``frame`` validated against the schema (the CSV path's checks and messages).

        ``frame`` is a DataFrame, or one row as a Series or a dict of scalars (a dict of
        columns also works); anything else is refused in one line. Values whose standardized
        input would overflow are refused or, unless ``ranges="error"``, clamped with a warning.
        """
        frame = as_frame(frame)
        table = validate_frame(
            frame,
            self.schema,
            require_label=False,
            missing=self.missing,
            ranges=ranges,
            id=self.schema.id,
        )
        return self._limited(table, ranges, lambda row: f"row {shown(frame.index[row])}")

    def read(self, path: str | Path, ranges: str = "warn") -> Table:
        """A CSV or Parquet file (by suffix) validated against the schema (see :meth:`table`)."""
        table = read_table(
            path, self.schema, require_label=False, missing=self.missing, ranges=ranges
        )
        return self._limited(table, ranges, lambda row: f"data row {row + 1}")

    def _limited(self, table: Table, ranges: str, row_name: Callable[[int], str]) -> Table:
        """``table`` with values that would overflow the model's input refused or clamped."""
        limits = [prep.input_limits(OVERFLOW_SIGMAS) for prep in self.preprocessors]
        low = np.max([lo for lo, _ in limits], axis=0)
        high = np.min([hi for _, hi in limits], axis=0)
        return limit_overflow(table, low, high, ranges, row_name)

    def validate(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The frame's raw feature values (float32, schema order) and ids, or a DataError."""
        if self.categorical_features:
            raise ConfigError(
                f"categorical features ({', '.join(self.categorical_features)}) have no "
                "numeric raw values"
            )
        frame = as_frame(frame)
        table = self.table(frame)
        return table.frame.to_numpy(dtype=np.float32), _ids(table, frame)

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def outputs(self, table: Table) -> torch.Tensor:
        """The ensemble's combined, calibrated outputs ``(n, outputs)`` for validated rows,
        computed :attr:`chunk_rows` rows at a time.

        Rows whose outputs are not finite (a network whose arithmetic overflows) are refused:
        NaN would otherwise decode as the first class.
        """
        features, codes = self.preprocess.inputs(table.frame)  # refusals name the table's row
        temperatures = self.temperatures.to(self.device).view(-1, 1, 1)
        parts = []
        for start in range(0, len(table), self.chunk_rows) or range(1):
            rows = slice(start, start + self.chunk_rows)
            part = None if codes is None else codes[rows]
            x = self.preprocess.checked(table.frame, features[rows], part, start)
            parts.append(self.head.combine(self.network(x) / temperatures))
        combined = torch.cat(parts)
        broken = ~torch.isfinite(combined).all(dim=1)
        if broken.any():
            row = int(broken.nonzero()[0])
            source = "" if table.source.startswith("<") else f"{table.source}: "
            where = f"data row {row + 1}" + (
                f" (id {shown(table.ids[row])})" if table.ids is not None else ""
            )
            raise DataError(
                f"{source}{where}: the model's outputs are not finite "
                f"({int(broken.sum())} row(s)); its arithmetic overflows on these inputs"
            )
        return combined

    def predict_table(self, table: Table) -> pd.DataFrame:
        """Id, label (original class values) and ``prob_<class>`` per row of ``table``."""
        import pandas as pd

        outputs = self.outputs(table)
        probs = self.head.probabilities(outputs).cpu().numpy()
        labels = self.schema.decode_labels(self.head.decode(outputs).cpu().numpy())
        ids = table.ids if table.ids is not None else np.arange(1, len(table) + 1)
        result = pd.DataFrame({self.id_name: ids, self.label_name: labels})
        for k, value in enumerate(self.class_labels):
            result[f"prob_{value}"] = probs[:, k]
        return result

    def predict(self, frame: Any) -> pd.DataFrame:
        """Predictions for a DataFrame (any column order; or one row as a Series or dict); the
        result keeps its index, and its id column is the frame's (``id``, or the schema's),
        else the index."""
        frame = as_frame(frame)
        table = self.table(frame)
        result = self.predict_table(table)
        if table.ids is None:
            result[self.id_name] = frame.index.to_numpy()
        result.index = frame.index
        return result

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Class probabilities, shape ``(rows, num_classes)`` (rows as :meth:`table` takes)."""
        return self.head.probabilities(self.outputs(self.table(frame))).cpu().numpy()

    def probability_module(self) -> torch.nn.Module:
        """Raw feature values -> class probabilities ``(n, K)``, one traceable module
        (preprocessing, every member, temperatures and the ensemble's combination inside).

        Its inputs are ``features`` (float32, the numeric-kind features in schema order, NaN
        for missing) and, when the schema has categorical features, ``codes`` (int64, one
        column per categorical feature in schema order: the value's position in its
        ``categories``, :data:`UNKNOWN_CODE` outside them, :data:`MISSING_CODE` missing). A
        row pricenet would refuse (an unknown category where the schema's ``unknown`` is
        error, a missing category under ``missing=error``) gets NaN probabilities.
        """
        return _ProbabilityModule(self).eval()


def as_frame(rows: Any) -> pd.DataFrame:
    """``rows`` as a DataFrame: a DataFrame as is, a Series as one row (its index the columns),
    a dict of scalars as one row, a dict of columns as a frame; else a one-line DataError."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, pd.Series):
        return rows.to_frame().T.infer_objects()
    if isinstance(rows, Mapping):
        if rows and all(np.ndim(v) == 0 for v in rows.values()):
            return pd.DataFrame([rows])
        try:
            return pd.DataFrame(rows)
        except (ValueError, TypeError) as err:
            raise DataError(
                f"rows given as a dict cannot form a table ({first_line(err)})"
            ) from None
    raise DataError(
        f"expected a pandas DataFrame (or one row as a Series or dict), got "
        f"{type(rows).__name__}: rows need their column names"
    )


def _ids(table: Table, frame: pd.DataFrame) -> np.ndarray:
    return table.ids if table.ids is not None else frame.index.to_numpy()


class _ProbabilityModule(torch.nn.Module):
    """The members' :class:`~pricenet.tables.prep.PreprocessModule`, the packed network, the
    temperatures and the head's combination, as one traceable module: ``forward(features)``
    or, with categorical features, ``forward(features, codes)`` (see
    :meth:`Predictor.probability_module`)."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.preprocess = predictor.preprocess
        self.network = predictor.network
        self.head = predictor.head
        self.register_buffer("temperatures", predictor.temperatures.clone().view(-1, 1, 1))

    def forward(self, features: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        outputs = self.network(self.preprocess(features, codes)) / self.temperatures
        probabilities = self.head.probabilities(self.head.combine(outputs))
        refused = self.preprocess.refused(codes)
        if refused is not None:
            nan = torch.full_like(probabilities, float("nan"))
            probabilities = torch.where(refused.unsqueeze(1), nan, probabilities)
        return probabilities
