"""Predict with a trained checkpoint: a command and a Python API.

Command::

    python -m pricenet.predict checkpoint=<best.pt or run folder> input=<csv> output=<csv>

Notebook::

    predictor = Predictor.from_checkpoint("outputs/runs/<run>")
    predictor.predict(frame)         # DataFrame: id, <label>, prob_<class> per class
    predictor.predict_proba(frame)   # (n, K) numpy array

A checkpoint is untrusted input: it is loaded with ``weights_only=True`` and rebuilt through
:func:`pricenet.restore.restore_model` (closed registries, every value checked), so it cannot
run code. Inputs are validated against the checkpoint's schema by the same validator as
training data. A checkpoint of several members (a cross-validated run's fold models, or
seed repeats) predicts as one ensemble: each member scales the rows with its own
preprocessor and calibrates with its own temperature, and their outputs are combined in the
head's space (averaged probabilities).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import MISSING

from pricenet.atomic import atomic_write_text
from pricenet.checkpoint import load_checkpoint, resolve_checkpoint
from pricenet.cli import check_output_path, parse_options
from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.restore import Restored, restore_model
from pricenet.seed import resolve_device
from pricenet.tables import Table, validate_frame
from pricenet.tables.read import is_parquet, read_table

if TYPE_CHECKING:
    import pandas as pd

USAGE = """\
usage: pricenet-predict checkpoint=PATH input=CSV output=CSV [overwrite=true] [ranges=warn]

  checkpoint  a best.pt / last.pt, or a run folder (its best.pt is used)
  input       CSV with the checkpoint's feature columns in any order, an optional id column
              (else the row number, from 1) and the optional label column (then the
              accuracy is printed)
  output      CSV to write: id, the label (original class values), prob_<class> per class
  overwrite   replace an existing output (default false)
  ranges      values outside the schema's ranges: warn (default), error or ignore"""


class Predictor:
    """A trained model (or ensemble) with its schema and preprocessing, loaded once."""

    def __init__(self, restored: Restored, device: torch.device) -> None:
        self.network = restored.network.to(device).eval()
        self.head = restored.head
        self.schema = restored.schema
        self.preprocessors = restored.preprocessors
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

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """Load ``path`` (a ``.pt`` file or a run folder, whose ``best.pt`` is used)."""
        where = resolve_checkpoint(path)
        return cls(restore_model(load_checkpoint(where), where), resolve_device(device))

    # ------------------------------------------------------------------ inputs

    def table(self, frame: pd.DataFrame, ranges: str = "warn") -> Table:
        """``frame`` validated against the schema (the CSV path's checks and messages)."""
        return validate_frame(
            frame,
            self.schema,
            require_label=False,
            missing=self.missing,
            ranges=ranges,
            id=self.schema.id,
        )

    def read(self, path: str | Path, ranges: str = "warn") -> Table:
        """A CSV or Parquet file (by its suffix) validated against the schema."""
        return read_table(
            path, self.schema, require_label=False, missing=self.missing, ranges=ranges
        )

    def validate(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The frame's raw feature values (float32, schema order) and ids, or a DataError."""
        if self.categorical_features:
            raise ConfigError(
                f"categorical features ({', '.join(self.categorical_features)}) have no "
                "numeric raw values"
            )
        table = self.table(frame)
        return table.frame.to_numpy(dtype=np.float32), _ids(table, frame)

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def outputs(self, table: Table) -> torch.Tensor:
        """The ensemble's combined, calibrated outputs ``(n, outputs)`` for validated rows."""
        x = torch.stack(
            [torch.from_numpy(prep.transform(table.frame)) for prep in self.preprocessors]
        ).to(self.device)
        outputs = self.network(x) / self.temperatures.to(self.device).view(-1, 1, 1)
        return self.head.combine(outputs)

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

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for a DataFrame (any column order); the result keeps its index."""
        table = self.table(frame)
        result = self.predict_table(table)
        if table.ids is None:
            result[self.id_name] = frame.index.to_numpy()
        result.index = frame.index
        return result

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, shape ``(len(frame), num_classes)``."""
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


def _ids(table: Table, frame: pd.DataFrame) -> np.ndarray:
    return table.ids if table.ids is not None else frame.index.to_numpy()


UNKNOWN_CODE = -1
MISSING_CODE = -2


class _ProbabilityModule(torch.nn.Module):
    """Each member's preprocessing (impute, scale, one-hot of category codes, was-missing
    inputs), the packed network, the temperatures and the head's combination, as one
    traceable module: ``forward(features)`` or, with categorical features,
    ``forward(features, codes)`` (see :meth:`Predictor.probability_module`)."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        preps = predictor.preprocessors
        first = preps[0]
        self.network = predictor.network
        self.head = predictor.head
        numeric = list(first.numeric_names)
        categorical = [c.name for c in first.categorical]
        # (is categorical, column) per was-missing input, in the preprocessor's order
        self.indicators = [
            (
                name in categorical,
                categorical.index(name) if name in categorical else numeric.index(name),
            )
            for name in first.indicators
        ]
        self.sizes = [len(c.categories) for c in first.categorical]
        self.maps_unknown = [c.unknown for c in first.categorical]
        self.impute = first.missing == "impute"
        stack = lambda key: torch.tensor(np.stack([getattr(p, key) for p in preps]))  # noqa: E731
        self.register_buffer("mean", stack("numeric_mean").unsqueeze(1))
        self.register_buffer("std", stack("numeric_std").unsqueeze(1))
        self.register_buffer("fill", stack("numeric_fill").unsqueeze(1))
        fills = [[c.categories.index(c.fill) for c in p.categorical] for p in preps]
        self.register_buffer(
            "category_fill",
            torch.tensor(fills, dtype=torch.int64).view(len(preps), 1, len(self.sizes)),
        )
        self.register_buffer("temperatures", predictor.temperatures.clone().view(-1, 1, 1))

    def forward(self, features: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        raw = features.unsqueeze(0)  # [1, n, k]
        x = (torch.where(torch.isnan(raw), self.fill, raw) - self.mean) / self.std
        blocks = [x]
        refused: torch.Tensor | None = None
        if self.sizes:
            assert codes is not None, "categorical features need their codes"
            absent = codes == MISSING_CODE
            filled = torch.where(absent.unsqueeze(0), self.category_fill, codes.unsqueeze(0))
            for j, (size, maps) in enumerate(zip(self.sizes, self.maps_unknown, strict=True)):
                column = filled[..., j : j + 1]  # [members, n, 1]
                if maps:
                    column = torch.where(column == UNKNOWN_CODE, size, column)
                else:
                    bad = codes[:, j] == UNKNOWN_CODE
                    refused = bad if refused is None else refused | bad
                slots = torch.arange(size + int(maps), device=codes.device)
                blocks.append((column == slots).to(x.dtype))
            if not self.impute:
                bad = absent.any(dim=1)
                refused = bad if refused is None else refused | bad
        if self.indicators:
            gaps = [
                codes[:, j] == MISSING_CODE if is_categorical else torch.isnan(features[:, j])
                for is_categorical, j in self.indicators
            ]
            gaps = torch.stack(gaps, dim=1).to(x.dtype).unsqueeze(0)
            blocks.append(gaps.expand(x.shape[0], -1, -1))
        x = torch.cat(blocks, dim=-1) if len(blocks) > 1 else x
        outputs = self.network(x) / self.temperatures
        probabilities = self.head.probabilities(self.head.combine(outputs))
        if refused is not None:
            nan = torch.full_like(probabilities, float("nan"))
            probabilities = torch.where(refused.unsqueeze(1), nan, probabilities)
        return probabilities


@dataclass
class PredictOptions:
    checkpoint: str = MISSING
    input: str = MISSING
    output: str = MISSING
    overwrite: bool = False
    ranges: str = "warn"


def predict_csv(options: PredictOptions) -> pd.DataFrame:
    """Read ``input``, predict, write ``output`` atomically; print the accuracy when labelled."""
    output = check_output_path(options.output, options.overwrite)
    predictor = Predictor.from_checkpoint(options.checkpoint)
    table = predictor.read(options.input, options.ranges)
    result = predictor.predict_table(table)
    if is_parquet(output):
        from pricenet.tables.parquet import write_parquet

        write_parquet(output, result)
    else:
        atomic_write_text(output, result.to_csv(index=False, float_format="%.6f"))
    print(f"wrote {len(result)} predictions to {output}")
    if table.labels is not None:
        predicted = predictor.schema.label_indices(result[predictor.label_name])
        correct = int((predicted == table.labels).sum())
        print(f"accuracy {correct / len(table):.4f} ({correct}/{len(table)} rows)")
    return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-predict`` command."""
    predict_csv(parse_options(sys.argv[1:] if argv is None else argv, PredictOptions, USAGE))


if __name__ == "__main__":
    main()
