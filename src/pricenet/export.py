"""Export a trained model as one portable graph: raw feature values in, class probabilities out.

Command::

    python -m pricenet.export checkpoint=<run folder|best.pt> format=onnx output=model.onnx

The graph is ``Predictor.probability_module()``: the scaler, the model (or the ensemble's
average), the temperature and the head's decoding into probabilities are all inside, so a
consumer passes the raw row, columns in the order of the ``pricenet.feature_names``
metadata. The schema travels with the file:

========================  =====================================================
ONNX metadata_props key   value
========================  =====================================================
pricenet.feature_names    JSON list: the input columns, in order
pricenet.class_labels     JSON list: the class of each probability column
pricenet.label_name       the label column's name
pricenet.input            the graph's input name (``features``: float32 (n, F))
pricenet.output           the graph's output name (``probabilities``: (n, K))
========================  =====================================================

``format=torchscript`` writes a traced TorchScript file with the same schema as the extra
file ``pricenet.json``. ONNX needs the ``pricenet[export]`` extra (onnx, onnxruntime); the
written ONNX graph is run once with onnxruntime and compared with torch before the command
reports success.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING

from pricenet.checkpoint import atomic_write_bytes
from pricenet.cli import check_output_path, parse_options
from pricenet.errors import CheckpointError, ConfigError, exit_on_user_error
from pricenet.predict import Predictor

FORMATS = ("onnx", "torchscript")
INPUT = "features"
OUTPUT = "probabilities"
OPSET = 17
# The exported graph must reproduce torch within this on a probe batch, or export fails.
SELF_CHECK_TOLERANCE = 1e-5

USAGE = """\
usage: pricenet-export checkpoint=PATH output=FILE [format=onnx|torchscript] [overwrite=true]

  checkpoint  a best.pt / last.pt, or a run folder (its best.pt is used)
  output      the file to write (model.onnx, model.ts)
  format      onnx (default; needs pip install 'pricenet[export]') or torchscript
  overwrite   replace an existing output (default false)
  opset       the ONNX opset (default 17)"""


@dataclass
class ExportOptions:
    checkpoint: str = MISSING
    output: str = MISSING
    format: str = "onnx"
    overwrite: bool = False
    opset: int = OPSET


@dataclass
class Schema:
    """What a consumer of an exported graph needs to know besides the graph."""

    feature_names: list[str]
    class_labels: list[Any]
    label_name: str

    @classmethod
    def of(cls, predictor: Predictor) -> Schema:
        return cls(predictor.feature_names, predictor.class_labels, predictor.label_name)

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` (string to string)."""
        return {
            "pricenet.feature_names": json.dumps(self.feature_names),
            "pricenet.class_labels": json.dumps(_plain(self.class_labels)),
            "pricenet.label_name": self.label_name,
            "pricenet.input": INPUT,
            "pricenet.output": OUTPUT,
        }


def _plain(values: list[Any]) -> list[Any]:
    """numpy scalars as Python values, so the labels are JSON."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            f"format=onnx needs the {module!r} package: pip install 'pricenet[export]'"
        ) from None


def _probe_batch(predictor: Predictor, rows: int = 64, seed: int = 0) -> torch.Tensor:
    """A float32 batch around the scaler's mean (values are only fed through the graph)."""
    generator = torch.Generator().manual_seed(seed)
    width = len(predictor.feature_names)
    scaler = getattr(predictor, "scaler", None)
    if scaler is not None:
        mean, std = scaler.mean.float().cpu(), scaler.std.float().cpu()
        return mean + std * torch.randn(rows, width, generator=generator)
    return torch.randn(rows, width, generator=generator)


def _exportable(predictor: Predictor) -> torch.nn.Module:
    if getattr(predictor, "categorical_features", None):
        raise ConfigError("categorical features are not exportable yet")
    return predictor.probability_module().cpu().eval()


def _cannot(checkpoint: str, fmt: str, err: BaseException) -> CheckpointError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return CheckpointError(
        f"{checkpoint}: cannot be exported to {fmt} ({type(err).__name__}: {first[:200]})"
    )


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: torch's exporter prints its IR there on failure."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)  # C stdio buffers, before fd 1 is restored
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def onnx_bytes(module: torch.nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """The ONNX serialization of ``module`` with a dynamic batch dimension.

    Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript and
    handles every pricenet head; torch marks it deprecated, which is silenced here.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "rows"}, OUTPUT: {0: "rows"}},
            opset_version=opset,
        )
    return buffer.getvalue()


def with_metadata(model_bytes: bytes, schema: Schema) -> bytes:
    """The ONNX model with ``schema`` in its ``metadata_props`` and a doc string."""
    onnx = _require("onnx")
    model = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(model, schema.metadata())
    model.doc_string = (
        f"pricenet: raw {INPUT} float32 (rows, {len(schema.feature_names)}) in the order of "
        f"pricenet.feature_names -> {OUTPUT} (rows, {len(schema.class_labels)}) for the classes "
        f"of pricenet.class_labels ({schema.label_name})"
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model: bytes | str | Path) -> Any:
    """An onnxruntime CPU session on a serialized model or a file."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, str | Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def read_schema(path: str | Path) -> Schema:
    """The schema stored in an exported ONNX file."""
    onnx = _require("onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return Schema(
        json.loads(props["pricenet.feature_names"]),
        json.loads(props["pricenet.class_labels"]),
        props["pricenet.label_name"],
    )


def _self_check(got: np.ndarray, expected: np.ndarray, checkpoint: str, fmt: str) -> None:
    gap = float(np.abs(got - expected).max()) if got.size else 0.0
    if got.shape != expected.shape or not gap <= SELF_CHECK_TOLERANCE:
        raise CheckpointError(
            f"{checkpoint}: the exported {fmt} graph disagrees with torch "
            f"(max |diff| {gap:.2e}, shape {got.shape} vs {expected.shape}); nothing written"
        )


def export_onnx(predictor: Predictor, checkpoint: str, opset: int = OPSET) -> bytes:
    """The checked ONNX bytes for ``predictor`` (raw features -> calibrated probabilities)."""
    _require("onnx")
    module = _exportable(predictor)
    example = _probe_batch(predictor)
    try:
        model = with_metadata(onnx_bytes(module, example, opset), Schema.of(predictor))
    except ConfigError:
        raise
    except Exception as err:
        raise _cannot(checkpoint, "onnx", err) from err
    with torch.no_grad():
        expected = module(example).numpy()
    session = onnx_session(model)
    _self_check(session.run(None, {INPUT: example.numpy()})[0], expected, checkpoint, "onnx")
    return model


def export_torchscript(predictor: Predictor, checkpoint: str) -> bytes:
    """A traced TorchScript archive, with the schema as the extra file ``pricenet.json``."""
    module = _exportable(predictor)
    example = _probe_batch(predictor)
    schema = Schema.of(predictor)
    extra = {"pricenet.json": json.dumps({**schema.metadata(), "format": "torchscript"})}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, buffer, _extra_files=extra)
    except Exception as err:
        raise _cannot(checkpoint, "torchscript", err) from err
    with torch.no_grad():
        # a different batch size than traced with: the batch dimension must stay dynamic
        probe = example[:7]
        _self_check(traced(probe).numpy(), module(probe).numpy(), checkpoint, "torchscript")
    return buffer.getvalue()


def export(options: ExportOptions) -> Path:
    """Check the options and the output path, load, export, verify, write; return the path."""
    if options.format not in FORMATS:
        raise ConfigError(f"format={options.format}: choose from {', '.join(FORMATS)}")
    output = check_output_path(options.output, options.overwrite)
    if options.format == "onnx":
        _require("onnx")
        _require("onnxruntime")
    predictor = Predictor.from_checkpoint(options.checkpoint)
    if options.format == "onnx":
        data = export_onnx(predictor, options.checkpoint, options.opset)
    else:
        data = export_torchscript(predictor, options.checkpoint)
    atomic_write_bytes(output, data)
    return output


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-export`` command."""
    options = parse_options(sys.argv[1:] if argv is None else argv, ExportOptions, USAGE)
    path = export(options)
    print(f"wrote {path} ({options.format}, {path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
