"""The ``pricenet-predict`` command: a checkpoint's predictions for a CSV or Parquet file.

    python -m pricenet.predict checkpoint=<best.pt or run folder> input=<csv> output=<csv>

The model, its checks and the Python API are :class:`pricenet.inference.predictor.Predictor`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import MISSING

from pricenet.atomic import atomic_write
from pricenet.checkpoints.checkpoint import resolve_checkpoint
from pricenet.config.cli import check_not_an_input, check_output_path, parse_options
from pricenet.errors import exit_on_user_error
from pricenet.inference.predictor import Predictor
from pricenet.tables.cells import escape_formulas_in
from pricenet.tables.read import is_parquet

if TYPE_CHECKING:
    import pandas as pd

USAGE = """\
usage: pricenet-predict checkpoint=PATH input=CSV output=CSV [overwrite=true] [ranges=warn]
                        [escape_formulas=false]

  checkpoint  a best.pt / last.pt, or a run folder (its best.pt is used)
  input       CSV with the checkpoint's feature columns in any order, an optional id column
              (else the row number, from 1) and the optional label column (then the
              accuracy is printed)
  output      CSV to write: id, the label (original class values), prob_<class> per class
  overwrite   replace an existing output (default false)
  ranges      values outside the schema's ranges: warn (default), error or ignore; values
              whose model input would overflow are refused under error, else clamped
              with a warning
  escape_formulas
              prefix text cells starting with = + - @ tab or CR with ' so a spreadsheet
              shows them rather than runs them (default true; numbers are never changed)"""


@dataclass
class PredictOptions:
    checkpoint: str = MISSING
    input: str = MISSING
    output: str = MISSING
    overwrite: bool = False
    ranges: str = "warn"
    escape_formulas: bool = True


def write_output(result: pd.DataFrame, path: Path, escape_formulas: bool = True) -> None:
    """Write ``result`` atomically: as Parquet when ``path`` ends in ``.parquet``, else CSV
    (streamed into the temporary file, so no second copy of the table is held as text).

    With ``escape_formulas``, CSV text cells a spreadsheet would run as a formula get a leading
    ``'`` (OWASP's CSV-injection rule: :func:`pricenet.tables.cells.escape_formula`); numbers
    are unchanged. Parquet cells are typed data, never formulas, and are written as they are.
    """
    if is_parquet(path):
        from pricenet.tables.parquet import write_parquet

        write_parquet(path, result)
        return
    frame = escape_formulas_in(result) if escape_formulas else result
    atomic_write(
        path,
        lambda handle: frame.to_csv(
            handle, mode="wb", encoding="utf-8", index=False, float_format="%.6f"
        ),
    )


def predict_csv(options: PredictOptions) -> pd.DataFrame:
    """Read ``input``, predict, write ``output`` atomically; print the accuracy when labelled.

    The output must be a regular file or a new path, and neither the input nor the
    checkpoint (checked before any work).
    """
    output = check_output_path(options.output, options.overwrite)
    checkpoint = resolve_checkpoint(options.checkpoint)
    check_not_an_input(output, {"input": options.input, "checkpoint": checkpoint})
    predictor = Predictor.from_checkpoint(checkpoint)
    table = predictor.read(options.input, options.ranges)
    result = predictor.predict_table(table)
    write_output(result, output, options.escape_formulas)
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
