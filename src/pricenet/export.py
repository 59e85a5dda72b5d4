"""Export a trained model as one portable graph: raw feature values in, class probabilities out.

Command::

    python -m pricenet.export checkpoint=<run folder|best.pt> format=onnx output=model.onnx

The graph is ``Predictor.probability_module()``: the scaler, the categorical encoding, the
model (or the ensemble's average), the temperature and the head's decoding into
probabilities are all inside, so a consumer passes the raw row. For an all-numeric schema
(the phone data) the one input ``features`` holds every feature, in the order of
``pricenet.feature_names``. A schema with categorical features gives the graph a second
input, ``categories``: a string tensor (n, C), one column per categorical feature in the
order of ``pricenet.categorical_names``, beside ``features`` (float32, only the
numeric-kind features, in the order of ``pricenet.numeric_names``). Inside the graph an
``ai.onnx.ml`` ``LabelEncoder`` per column turns each string into its position in the
column's categories, and the torch part one-hots it (an unknown value into the unknown slot
when the schema's ``unknown`` is map). A missing value is NaN in ``features`` and the empty
string in ``categories``; under ``missing=impute`` it is imputed as in training. A row
pricenet refuses (an unknown category where ``unknown`` is error, an empty category under
``missing=error``) gets NaN probabilities instead of an error. The schema travels with the
file:

==========================  =====================================================
ONNX metadata_props key     value
==========================  =====================================================
pricenet.feature_names      JSON list: every feature, in schema order
pricenet.class_labels       JSON list: the class of each probability column
pricenet.label_name         the label column's name
pricenet.input              the float input's name (``features``: float32 (n, F))
pricenet.output             the graph's output name (``probabilities``: (n, K))
pricenet.numeric_names      (categorical schemas) JSON list: ``features``' columns
pricenet.categorical_names  (categorical schemas) JSON list: ``categories``' columns
pricenet.categories         (categorical schemas) JSON object: name -> categories
pricenet.categorical_input  (categorical schemas) the string input's name
==========================  =====================================================

``format=torchscript`` writes a traced TorchScript file with the same schema as the extra
file ``pricenet.json``. TorchScript has no string tensors: its second input (categorical
schemas) is ``codes``, int64 (n, C), each value's position in its categories, -1 for an
unknown value and -2 for a missing one. ONNX needs the ``pricenet[export]`` extra (onnx,
onnxruntime); the written ONNX graph is run once with onnxruntime and compared with torch
(every kind of category value included) before the command reports success.
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

from pricenet.atomic import atomic_write_bytes, json_value
from pricenet.checkpoints.checkpoint import resolve_checkpoint
from pricenet.config.cli import check_not_an_input, check_output_path, parse_options
from pricenet.errors import CheckpointError, ConfigError, exit_on_user_error, first_line
from pricenet.inference.predictor import Predictor

FORMATS = ("onnx", "torchscript")
INPUT = "features"
CATEGORIES = "categories"
OUTPUT = "probabilities"
CODES = "codes"  # the torch part's int64 input; ONNX computes it from CATEGORIES
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 2  # LabelEncoder with keys_strings / values_int64s
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
class GraphMetadata:
    """What a consumer of an exported graph needs to know besides the graph."""

    feature_names: list[str]
    class_labels: list[Any]
    label_name: str
    numeric_names: list[str] | None = None  # only for a schema with categorical features
    categories: dict[str, list[str]] | None = None  # name -> categories, in schema order

    @classmethod
    def of(cls, predictor: Predictor) -> GraphMetadata:
        prep = predictor.preprocessors[0]
        if not prep.categorical:
            return cls(predictor.feature_names, predictor.class_labels, predictor.label_name)
        return cls(
            predictor.feature_names,
            predictor.class_labels,
            predictor.label_name,
            list(prep.numeric_names),
            {c.name: list(c.categories) for c in prep.categorical},
        )

    @property
    def input_names(self) -> list[str]:
        """The float input's columns (every feature, or the numeric-kind ones)."""
        return self.feature_names if self.numeric_names is None else self.numeric_names

    @property
    def categorical_names(self) -> list[str]:
        return list(self.categories or {})

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` (string to string)."""
        props = {
            "pricenet.feature_names": json.dumps(self.feature_names),
            "pricenet.class_labels": json.dumps(json_value(self.class_labels)),
            "pricenet.label_name": self.label_name,
            "pricenet.input": INPUT,
            "pricenet.output": OUTPUT,
        }
        if self.categories:
            props["pricenet.numeric_names"] = json.dumps(self.input_names)
            props["pricenet.categorical_names"] = json.dumps(self.categorical_names)
            props["pricenet.categories"] = json.dumps(self.categories)
            props["pricenet.categorical_input"] = CATEGORIES
        return props


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            f"format=onnx needs the {module!r} package: pip install 'pricenet[export]'"
        ) from None


def _probe_batch(predictor: Predictor, rows: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The module's inputs for ``rows`` probe rows: float32 features around the first
    member's mean and, with categorical features, int64 codes of every kind (categories,
    unknown -1, missing -2). Values are only fed through the graph."""
    generator = torch.Generator().manual_seed(seed)
    prep = predictor.preprocessors[0]
    mean = torch.from_numpy(prep.numeric_mean).float()
    std = torch.from_numpy(prep.numeric_std).float()
    features = mean + std * torch.randn(rows, len(prep.numeric_names), generator=generator)
    if not prep.categorical:
        return (features,)
    codes = [
        torch.randint(-2, len(c.categories), (rows,), generator=generator) for c in prep.categorical
    ]
    return features, torch.stack(codes, dim=1)


def _probe_strings(codes: torch.Tensor, schema: GraphMetadata) -> np.ndarray:
    """The ``categories`` strings that encode to ``codes`` (-1: a value outside, -2: "")."""
    columns = []
    for j, categories in enumerate((schema.categories or {}).values()):
        unknown = "<unknown>"
        while unknown in categories:
            unknown += "?"
        values = np.array([*categories, "", unknown], dtype=object)
        columns.append(values[codes[:, j].numpy()])  # -1, -2 index the two extra values
    return np.stack(columns, axis=1)


def _exportable(predictor: Predictor) -> torch.nn.Module:
    return predictor.probability_module().cpu().eval()


def _cannot(checkpoint: str, fmt: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{checkpoint}: cannot be exported to {fmt} "
        f"({type(err).__name__}: {first_line(err, '')[:200]})"
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


def onnx_bytes(
    module: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int = OPSET
) -> bytes:
    """The ONNX serialization of ``module`` with a dynamic batch dimension; its inputs are
    ``features`` and, for a second example tensor, ``codes``.

    Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript and
    handles every pricenet head; torch marks it deprecated, which is silenced here.
    """
    inputs = [INPUT, CODES][: len(example)]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            input_names=inputs,
            output_names=[OUTPUT],
            dynamic_axes={name: {0: "rows"} for name in [*inputs, OUTPUT]},
            opset_version=opset,
        )
    return buffer.getvalue()


def with_string_categories(model_bytes: bytes, schema: GraphMetadata) -> bytes:
    """Replace the graph's int64 ``codes`` input by a string ``categories`` input (n, C).

    Per column: ``Gather`` the strings, an ``ai.onnx.ml`` ``LabelEncoder`` maps each
    category to its position, "" to -2 (missing) and anything else to -1 (unknown);
    ``Unsqueeze`` and ``Concat`` rebuild the (n, C) ``codes`` the torch part reads.
    """
    onnx = _require("onnx")
    helper, tensor = onnx.helper, onnx.TensorProto
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    (codes_input,) = [i for i in graph.input if i.name == CODES]
    graph.input.remove(codes_input)
    columns = len(schema.categorical_names)
    graph.input.append(helper.make_tensor_value_info(CATEGORIES, tensor.STRING, ["rows", columns]))
    graph.initializer.append(helper.make_tensor("pricenet_axis1", tensor.INT64, [1], [1]))
    nodes, encoded = [], []
    for j, categories in enumerate((schema.categories or {}).values()):
        index, column, code = f"pricenet_col{j}", f"pricenet_str{j}", f"pricenet_code{j}"
        graph.initializer.append(helper.make_tensor(index, tensor.INT64, [], [j]))
        nodes += [
            helper.make_node("Gather", [CATEGORIES, index], [column], axis=1, name=column),
            helper.make_node(
                "LabelEncoder",
                [column],
                [code],
                domain=ML_DOMAIN,
                name=code,
                keys_strings=[*categories, ""],
                values_int64s=[*range(len(categories)), -2],
                default_int64=-1,
            ),
            helper.make_node(
                "Unsqueeze", [code, "pricenet_axis1"], [f"{code}_2d"], name=f"{code}_2d"
            ),
        ]
        encoded.append(f"{code}_2d")
    nodes.append(helper.make_node("Concat", encoded, [CODES], axis=1, name="pricenet_codes"))
    for node in reversed(nodes):
        graph.node.insert(0, node)
    if all(o.domain != ML_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    return model.SerializeToString()


def with_metadata(model_bytes: bytes, schema: GraphMetadata) -> bytes:
    """The ONNX model with ``schema`` in its ``metadata_props`` and a doc string."""
    onnx = _require("onnx")
    model = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(model, schema.metadata())
    if schema.categories:
        inputs = (
            f"raw {INPUT} float32 (rows, {len(schema.input_names)}) in the order of "
            f"pricenet.numeric_names and {CATEGORIES} string (rows, "
            f"{len(schema.categorical_names)}) in the order of pricenet.categorical_names "
            "('' for missing)"
        )
    else:
        inputs = (
            f"raw {INPUT} float32 (rows, {len(schema.feature_names)}) in the order of "
            "pricenet.feature_names"
        )
    model.doc_string = (
        f"pricenet: {inputs} -> {OUTPUT} (rows, {len(schema.class_labels)}) for the classes "
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


def read_schema(path: str | Path) -> GraphMetadata:
    """The schema stored in an exported ONNX file."""
    onnx = _require("onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    optional = {
        key: json.loads(props[f"pricenet.{key}"])
        for key in ("numeric_names", "categories")
        if f"pricenet.{key}" in props
    }
    return GraphMetadata(
        json.loads(props["pricenet.feature_names"]),
        json.loads(props["pricenet.class_labels"]),
        props["pricenet.label_name"],
        **optional,
    )


def onnx_inputs(schema: GraphMetadata, frame: Any) -> dict[str, np.ndarray]:
    """The graph's inputs for the raw rows of a DataFrame ``frame`` (NaN / None missing)."""
    feed = {INPUT: frame[schema.input_names].to_numpy(dtype=np.float32)}
    if schema.categories:
        strings = frame[schema.categorical_names].astype(object)
        feed[CATEGORIES] = strings.where(strings.notna(), "").astype(str).to_numpy(dtype=object)
    return feed


def _refused_rows(predictor: Predictor, example: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The probe rows the module answers with NaN by design (see
    :meth:`~pricenet.tables.prep.PreprocessModule.refused`)."""
    refused = predictor.preprocess.refused(example[1] if len(example) > 1 else None)
    return np.zeros(len(example[0]), dtype=bool) if refused is None else refused.cpu().numpy()


def _self_check(
    got: np.ndarray, expected: np.ndarray, refused: np.ndarray, checkpoint: str, fmt: str
) -> None:
    """``got`` reproduces ``expected`` within the tolerance, and both are finite except on
    the ``refused`` rows (NaN there, by design): NaN anywhere else fails, even NaN for NaN."""
    if got.shape != expected.shape:
        raise CheckpointError(
            f"{checkpoint}: the exported {fmt} graph disagrees with torch "
            f"(shape {got.shape} vs {expected.shape}); nothing written"
        )
    kept = ~refused
    for name, values in (("torch", expected), (fmt, got)):
        bad = int((~np.isfinite(values[kept])).any(axis=1).sum())
        if bad:
            raise CheckpointError(
                f"{checkpoint}: {name} gives non-finite probabilities on {bad} of "
                f"{int(kept.sum())} valid probe rows; nothing written"
            )
    gap = float(np.abs(got[kept] - expected[kept]).max()) if kept.any() else 0.0
    if not gap <= SELF_CHECK_TOLERANCE:
        raise CheckpointError(
            f"{checkpoint}: the exported {fmt} graph disagrees with torch "
            f"(max |diff| {gap:.2e}); nothing written"
        )


def export_onnx(predictor: Predictor, checkpoint: str, opset: int = OPSET) -> bytes:
    """The checked ONNX bytes for ``predictor`` (raw features -> calibrated probabilities)."""
    _require("onnx")
    module = _exportable(predictor)
    example = _probe_batch(predictor)
    schema = GraphMetadata.of(predictor)
    try:
        model = onnx_bytes(module, example, opset)
        if schema.categories:
            model = with_string_categories(model, schema)
        model = with_metadata(model, schema)
    except ConfigError:
        raise
    except Exception as err:
        raise _cannot(checkpoint, "onnx", err) from err
    with torch.no_grad():
        expected = module(*example).numpy()
    feed = {INPUT: example[0].numpy()}
    if schema.categories:
        feed[CATEGORIES] = _probe_strings(example[1], schema)
    session = onnx_session(model)
    refused = _refused_rows(predictor, example)
    _self_check(session.run(None, feed)[0], expected, refused, checkpoint, "onnx")
    return model


def export_torchscript(predictor: Predictor, checkpoint: str) -> bytes:
    """A traced TorchScript archive, with the schema as the extra file ``pricenet.json``."""
    module = _exportable(predictor)
    example = _probe_batch(predictor)
    schema = GraphMetadata.of(predictor)
    extra = {"pricenet.json": json.dumps({**schema.metadata(), "format": "torchscript"})}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, buffer, _extra_files=extra)
    except Exception as err:
        raise _cannot(checkpoint, "torchscript", err) from err
    with torch.no_grad():
        # a different batch size than traced with: the batch dimension must stay dynamic
        probe = tuple(tensor[:7] for tensor in example)
        refused = _refused_rows(predictor, probe)
        got, expected = traced(*probe).numpy(), module(*probe).numpy()
        _self_check(got, expected, refused, checkpoint, "torchscript")
    return buffer.getvalue()


def export(options: ExportOptions) -> Path:
    """Check the options and the output path, load, export, verify, write; return the path."""
    if options.format not in FORMATS:
        raise ConfigError(f"format={options.format}: choose from {', '.join(FORMATS)}")
    output = check_output_path(options.output, options.overwrite)
    checkpoint = resolve_checkpoint(options.checkpoint)
    check_not_an_input(output, {"checkpoint": checkpoint})
    if options.format == "onnx":
        _require("onnx")
        _require("onnxruntime")
    predictor = Predictor.from_checkpoint(checkpoint)
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
