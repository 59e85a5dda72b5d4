"""Rebuild what a checkpoint holds, checking every value first: for predict and for resume.

Every loader (the ``Predictor`` API and the commands built on it, and ``trainer.resume``)
goes through :func:`restore_model`, so they all refuse the same files with the same
one-line :class:`CheckpointError`: the network comes from a checked
:class:`~pricenet.nn.spec.NetworkSpec` through closed registries (no ``instantiate``, no
import by name), and every tensor must fit the shapes that network needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pricenet.checkpoints.checkpoint import (
    LAST,
    check_tensors,
    config_differences,
    current_target,
    load_checkpoint,
    resolve_checkpoint,
)
from pricenet.errors import CheckpointError, PricenetError, shown
from pricenet.nn.heads import Head
from pricenet.nn.model import build_network
from pricenet.nn.network import Network
from pricenet.nn.packed import PackedMLP
from pricenet.nn.spec import HEADS, NetworkSpec, SpecError, build_head
from pricenet.tables import Preprocessor, Schema


@dataclass
class Restored:
    """A trained (packed) network with what it needs to predict, from a checked checkpoint."""

    spec: NetworkSpec
    network: PackedMLP | Network
    head: Head
    schema: Schema
    preprocessors: list[Preprocessor]
    temperatures: list[float]


def _model_state(payload: dict[str, Any], where: str | Path) -> Any:
    """best.pt holds the selected weights; last.pt the last epoch's, inside its trainer state."""
    if "model" in payload:
        return payload["model"]
    trainer = payload.get("trainer")
    if isinstance(trainer, Mapping) and "model" in trainer:
        return trainer["model"]
    raise CheckpointError(f"{where}: holds no model weights (no 'model' or 'trainer.model')")


def _check_settings_agree(settings: dict[str, Any], spec: NetworkSpec, where: str | Path) -> None:
    """The stored settings are informational; ones that contradict the network are refused."""
    target = current_target(settings.get("loss.head._target_"))
    expected = f"pricenet.nn.heads.{HEADS[spec.head].__name__}"
    if target is not None and target != expected:
        raise CheckpointError(
            f"{where}: settings name the head {shown(target)}, but the network's head is "
            f"{spec.head!r}"
        )
    hidden = settings.get("model.hidden")
    if hidden is not None and list(hidden) != list(spec.hidden):
        raise CheckpointError(
            f"{where}: settings say model.hidden={hidden}, but the network has {list(spec.hidden)}"
        )


def _checked(where: str | Path, build: Any, *args: Any) -> Any:
    """``build(*args)``, its checks' errors (ConfigError from the tables) as CheckpointError."""
    try:
        return build(*args)
    except (SpecError, PricenetError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{where}: {err}") from None


def restore_model(payload: dict[str, Any], where: str | Path) -> Restored:
    """The network, head, schema, preprocessors and temperatures of a loaded checkpoint,
    every value checked before anything is built."""
    needed = ("network", "schema", "preprocessors", "settings")
    missing = [k for k in needed if k not in payload]
    if missing:
        raise CheckpointError(f"{where}: not a model checkpoint (no {', '.join(missing)})")
    spec = _checked(where, NetworkSpec.from_dict, payload["network"])
    schema = _checked(where, Schema.from_dict, payload["schema"], "schema")
    if spec.num_classes != schema.num_classes:
        raise CheckpointError(
            f"{where}: network.num_classes={spec.num_classes} but the schema has "
            f"{schema.num_classes} classes"
        )
    _check_settings_agree(payload["settings"], spec, where)
    states = payload["preprocessors"]
    if len(states) != spec.members:
        raise CheckpointError(
            f"{where}: {len(states)} preprocessors for {spec.members} network member(s)"
        )
    preprocessors = [
        _checked(where, Preprocessor.from_state_dict, state, f"preprocessors[{m}]", schema)
        for m, state in enumerate(states)
    ]
    for m, prep in enumerate(preprocessors):
        if prep.width != spec.in_features:
            raise CheckpointError(
                f"{where}: preprocessors[{m}] gives {prep.width} inputs, but "
                f"network.in_features={spec.in_features}"
            )
        coded = () if spec.categories is None else spec.categories.sizes
        if prep.embedded_sizes != coded:
            raise CheckpointError(
                f"{where}: preprocessors[{m}] gives codes of {len(prep.embedded_sizes)} "
                f"embedded categorical feature(s) {list(prep.embedded_sizes)}, but "
                f"network.categories embeds {list(coded)}"
            )
    temperatures = payload.get("temperatures", [1.0] * spec.members)
    if len(temperatures) != spec.members or not all(
        isinstance(t, float | int) and not isinstance(t, bool) and 0 < t < math.inf
        for t in temperatures
    ):
        raise CheckpointError(
            f"{where}: temperatures {shown(temperatures)} must be {spec.members} number(s) > 0"
        )
    # The spec is within the budget (NetworkSpec.from_dict); the tensors must fit it before
    # anything real is built: their shapes are checked against a storage-less (meta) network.
    shapes = build_network(spec, "meta").state_dict()
    state = check_tensors(_model_state(payload, where), shapes, f"{where}: model")
    network = build_network(spec)
    embedding = getattr(network, "embedding", None)
    if embedding is not None:  # bins: increasing edges, counts in range, padding as written
        _checked(where, embedding.check_state, state, "model.embedding", "embedding.")
    network.load_state_dict(state)
    head = build_head(spec.head, spec.num_classes)
    restored = Restored(
        spec, network, head, schema, preprocessors, [float(t) for t in temperatures]
    )
    _check_finite_outputs(restored, where)
    return restored


@torch.no_grad()
def _check_finite_outputs(restored: Restored, where: str | Path) -> None:
    """Weights that are finite but overflow (huge values, a tiny temperature) give NaN
    probabilities for every row: refused here, on a probe row of each member's training
    means (numbers) and most frequent categories, as predict computes them."""
    import pandas as pd

    rows = []
    for prep in restored.preprocessors:
        row = dict(zip(prep.numeric_names, prep.numeric_fill.tolist(), strict=True))
        row.update({c.name: c.fill for c in prep.categorical})
        rows.append(torch.from_numpy(prep.transform(pd.DataFrame([row]))))
    network = restored.network.eval()
    temperatures = torch.tensor(restored.temperatures).view(-1, 1, 1)
    outputs = restored.head.combine(network(torch.stack(rows)) / temperatures)
    probabilities = restored.head.probabilities(outputs)
    if not bool(torch.isfinite(outputs).all() and torch.isfinite(probabilities).all()):
        raise CheckpointError(
            f"{where}: its network gives non-finite outputs (NaN or infinity) on a probe row "
            "of its training means; the weights or temperatures overflow"
        )


@dataclass
class Resume:
    """What a resumed run takes from a ``last.pt``: the trainer state and the data's
    fingerprint; with the file and its (checked) network, to check the state against."""

    state: dict[str, Any]
    data_sha256: str | None
    file: Path
    network: PackedMLP | Network


def resume_state(path: str | Path, config: dict[str, Any]) -> Resume:
    """The trainer state in ``last.pt`` (or a run folder's), checked against this run's config.

    The file passes the same checks as for predicting (:func:`restore_model`) first.

    It is loaded on the CPU (RNG states must stay there); the trainer moves the rest.

    Resuming with other settings would silently train a different model, so any difference
    outside :data:`~pricenet.checkpoints.checkpoint.RESUME_MAY_CHANGE` is a :class:`CheckpointError`
    that names the keys.
    """
    file = resolve_checkpoint(path, LAST)
    checkpoint = load_checkpoint(file)
    if not isinstance(checkpoint.get("trainer"), dict):
        raise CheckpointError(f"{file}: holds no trainer state to resume from (use a last.pt)")
    restored = restore_model(checkpoint, file)  # the same checks as predict: a bad file fails here
    differences = config_differences(checkpoint.get("settings", {}), config)
    if differences:
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        overrides = file.parent / ".hydra" / "overrides.yaml"
        hint = f" (the original overrides are in {overrides})" if overrides.is_file() else ""
        raise CheckpointError(
            f"{file}: was trained with other settings: {shown}; resume with the same "
            f"overrides as the original run{hint}"
        )
    return Resume(checkpoint["trainer"], checkpoint.get("data_sha256"), file, restored.network)
