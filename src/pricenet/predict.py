"""Predict price ranges with a trained checkpoint: a command and a Python API.

Command::

    python -m pricenet.predict checkpoint=<best.pt or run folder> input=<csv> output=<csv>

Notebook::

    predictor = Predictor.from_checkpoint("outputs/runs/<run>")
    predictor.predict(frame)         # DataFrame: id, price_range, prob_0 .. prob_3
    predictor.predict_proba(frame)   # (n, 4) numpy array

The checkpoint is loaded with ``weights_only=True``, and the model, activation, init, loss
and head it names must be pricenet or ``torch.nn`` classes: a checkpoint cannot run any code.
The scaler fitted on the run's training split is applied to the inputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import MISSING

from pricenet.checkpoint import atomic_write_text, load_checkpoint, resolve_checkpoint
from pricenet.cli import check_output_path, parse_options
from pricenet.data import FEATURES, ID, LABEL, Standardizer, Table, read_csv
from pricenet.errors import DataError, exit_on_user_error
from pricenet.heads import Head
from pricenet.restore import restore_model
from pricenet.seed import resolve_device

if TYPE_CHECKING:
    import pandas as pd

USAGE = """\
usage: pricenet-predict checkpoint=PATH input=CSV output=CSV [overwrite=true]

  checkpoint  a best.pt / last.pt, or a run folder (its best.pt is used)
  input       CSV in the Kaggle test.csv layout: the 20 feature columns in any order,
              an optional id column (else the row number, from 1) and optional price_range
              (then the accuracy is printed)
  output      CSV to write: id, price_range, prob_0 .. prob_3 (one row per input row)
  overwrite   replace an existing output (default false)"""


def frame_to_table(frame: pd.DataFrame) -> Table:
    """The feature columns of ``frame`` (any order, extra columns ignored) as a :class:`Table`.

    Ids come from an ``id`` column, else from the frame's index.
    """
    import pandas as pd

    missing = [name for name in FEATURES if name not in frame.columns]
    if missing:
        word = "column" if len(missing) == 1 else "columns"
        raise DataError(f"{word} {', '.join(map(repr, missing))} missing from the DataFrame")
    columns = []
    for name in FEATURES:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = frame.index[bad[0]]
            raise DataError(
                f"column {name!r}, row {row!r}: {frame[name].iloc[bad[0]]!r} is not a number"
            )
        columns.append(values)
    ids = frame[ID].to_numpy() if ID in frame.columns else frame.index.to_numpy()
    return Table(np.stack(columns, axis=1).astype(np.float32), None, ids, source="<DataFrame>")


class Predictor:
    """A trained model with its scaler and head, loaded once, predicting on tables or frames.

    Loading never runs code named by the file: the network is rebuilt from a checked
    :class:`~pricenet.spec.NetworkSpec` through pricenet's closed registries, and every
    tensor is checked against the shapes that network needs before it is loaded.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        head: Head,
        scaler: Standardizer,
        device: torch.device,
        temperature: float = 1.0,
    ) -> None:
        self.model = model.to(device).eval()
        self.head = head
        self.scaler = scaler
        self.device = device
        self.temperature = temperature
        self.feature_names = list(FEATURES)
        self.label_name = LABEL
        self.class_labels = list(range(head.num_classes))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """Load ``path`` (a ``.pt`` file or a run folder, whose ``best.pt`` is used)."""
        where = resolve_checkpoint(path)
        restored = restore_model(load_checkpoint(where), where)
        return cls(
            restored.network,
            restored.head,
            restored.scaler,
            resolve_device(device),
            restored.temperature,
        )

    def probability_module(self) -> torch.nn.Module:
        """Raw feature values (n, features) -> class probabilities (n, K), as one module."""
        return _ProbabilityModule(self.model, self.head, self.scaler, self.temperature).eval()

    def validate(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The frame's features (float32, schema order) and ids, or a :class:`DataError`."""
        table = frame_to_table(frame)
        ids = table.ids if table.ids is not None else np.arange(1, len(table) + 1)
        return table.features, ids

    @torch.no_grad()
    def _outputs(self, features: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        return self.model(self.scaler(x)) / self.temperature

    def predict_table(self, table: Table) -> pd.DataFrame:
        """``id``, ``price_range`` and ``prob_<k>`` per row of ``table`` (ids kept, else 1..n)."""
        import pandas as pd

        outputs = self._outputs(table.features)
        probs = self.head.probabilities(outputs).cpu().numpy()
        ids = table.ids if table.ids is not None else np.arange(1, len(table) + 1)
        result = pd.DataFrame({ID: ids, LABEL: self.head.decode(outputs).cpu().numpy()})
        for k in range(self.head.num_classes):
            result[f"prob_{k}"] = probs[:, k]
        return result

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for a DataFrame in the Kaggle layout; the result keeps its index."""
        result = self.predict_table(frame_to_table(frame))
        result.index = frame.index
        return result

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, shape ``(len(frame), num_classes)``."""
        outputs = self._outputs(frame_to_table(frame).features)
        return self.head.probabilities(outputs).cpu().numpy()


class _ProbabilityModule(torch.nn.Module):
    """Scaler, network, temperature and the head's probabilities in one traceable module."""

    def __init__(
        self, model: torch.nn.Module, head: Head, scaler: Standardizer, temperature: float
    ) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.register_buffer("mean", scaler.mean.detach().clone().float())
        self.register_buffer("std", scaler.std.detach().clone().float())
        self.temperature = temperature

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        outputs = self.model((features - self.mean) / self.std)
        return self.head.probabilities(outputs / self.temperature)


@dataclass
class PredictOptions:
    checkpoint: str = MISSING
    input: str = MISSING
    output: str = MISSING
    overwrite: bool = False


def predict_csv(options: PredictOptions) -> pd.DataFrame:
    """Read ``input``, predict, write ``output`` atomically; print the accuracy when labelled."""
    output = check_output_path(options.output, options.overwrite)
    predictor = Predictor.from_checkpoint(options.checkpoint)
    table = read_csv(options.input, require_label=False)
    result = predictor.predict_table(table)
    atomic_write_text(output, result.to_csv(index=False, float_format="%.6f"))
    print(f"wrote {len(result)} predictions to {output}")
    if table.labels is not None:
        correct = int((result[LABEL].to_numpy() == table.labels).sum())
        print(f"accuracy {correct / len(table):.4f} ({correct}/{len(table)} rows)")
    return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-predict`` command."""
    predict_csv(parse_options(sys.argv[1:] if argv is None else argv, PredictOptions, USAGE))


if __name__ == "__main__":
    main()
