"""The (packed) MLP: its structure from a :class:`~pricenet.nn.spec.NetworkSpec`, its init from
the user's config.

``build_network(spec)`` is the loading path (structure only, torch's default init, nothing
instantiated by name); ``build_model(spec, generators, init, layer_inits)`` is the training
path: the same structure, then each member initialised from ``init`` / ``layer_inits`` with its
own generator, so member ``m`` of a packed model starts exactly where the same member trained
alone does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pricenet.errors import ConfigError
from pricenet.nn.categories import PackedCategoryEmbedding
from pricenet.nn.embeddings import (
    PackedNumericEmbedding,
    PackedPeriodicEmbeddings,
    PackedPiecewiseLinearEmbeddings,
)
from pricenet.nn.network import Network
from pricenet.nn.packed import (
    PackedBatchNorm1d,
    PackedDropout,
    PackedLinear,
    PackedMLP,
    PackedPReLU,
    PackedRReLU,
)
from pricenet.nn.spec import EmbeddingSpec, NetworkSpec, build_activation, build_head
from pricenet.nn.tabm import PackedTabM

# Which gain torch.nn.init.calculate_gain should use for each activation, and where its
# negative slope lives. Activations without an entry (ELU, GELU, SiLU) are ReLU-like.
_KAIMING: dict[type[nn.Module], tuple[str, Callable[[nn.Module], float]]] = {
    nn.ReLU: ("relu", lambda m: 0.0),
    nn.LeakyReLU: ("leaky_relu", lambda m: m.negative_slope),
    nn.PReLU: ("leaky_relu", lambda m: float(m.weight.detach().mean())),
    nn.RReLU: ("leaky_relu", lambda m: (m.lower + m.upper) / 2),
    nn.Tanh: ("tanh", lambda m: 0.0),
    nn.Sigmoid: ("sigmoid", lambda m: 0.0),
    nn.Identity: ("linear", lambda m: 0.0),
    nn.SELU: ("selu", lambda m: 0.0),
    PackedPReLU: ("leaky_relu", lambda m: float(m.weight.detach().mean())),
    PackedRReLU: ("leaky_relu", lambda m: (m.lower + m.upper) / 2),
}


def kaiming_args(activation: nn.Module | None) -> dict[str, Any]:
    """``nonlinearity`` and ``a`` for kaiming init of a layer followed by ``activation``."""
    if activation is None:
        return {"nonlinearity": "linear", "a": 0.0}
    name, slope = _KAIMING.get(type(activation), ("relu", lambda m: 0.0))
    return {"nonlinearity": name, "a": slope(activation)}


def _initializer(node: Any, key: str) -> Callable[..., Any] | None:
    """Instantiate ``init.<key>`` (a ``_partial_`` factory) or None to keep torch's default."""
    if node is None or node.get(key) is None:
        return None
    from hydra.utils import instantiate  # the user's own config: trusted, train time only

    fn = instantiate(node[key])
    if not callable(fn):
        raise ConfigError(f"init.{key} must be a function (did you forget _partial_: true?)")
    return fn


def _with_generator(fn: Callable[..., Any], activation: nn.Module | None, kaiming: bool) -> Any:
    """``fn(tensor, generator=g)``: kaiming arguments filled from the activation, and the
    generator passed only to functions that take one (``zeros_`` and ``constant_`` do not)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    params = inspect.signature(target).parameters
    given = fn.keywords if isinstance(fn, functools.partial) else {}
    extra = {}
    if kaiming:
        extra = {
            k: v for k, v in kaiming_args(activation).items() if k in params and k not in given
        }

    def call(tensor: torch.Tensor, generator: torch.Generator | None = None) -> Any:
        if "generator" in params:
            return fn(tensor, **extra, generator=generator)
        return fn(tensor, **extra)

    return call


def _layer_override(overrides: Mapping | None, index: int, group: str) -> Any:
    if not overrides:
        return None
    for key, value in overrides.items():
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"model.{group}: key {key!r} is not a layer index") from None
        if layer == index:
            return value
    return None


def build_network(
    spec: NetworkSpec,
    device: str | torch.device | None = None,
    bins: Sequence[Sequence[torch.Tensor]] | None = None,
) -> PackedMLP | Network:
    """The packed network a checked spec describes, with torch's default init (TabM's own,
    and placeholder bins for a piecewise-linear embedding, unless ``bins[m][f]`` are given).

    This is the loading path: weights come from a checkpoint next, and nothing here imports
    or instantiates anything by name. ``device="meta"`` builds the structure without
    allocating any storage: the shapes a checkpoint's tensors are checked against first.
    An MLP without embeddings (numeric or categorical) is a plain :class:`PackedMLP`;
    anything else a :class:`~pricenet.nn.network.Network`.
    """
    head = build_head(spec.head, spec.num_classes)
    activations = [build_activation(a) for a in spec.activations]  # small; PReLU's is read
    output_layer = head.output_layer()
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if spec.arch == "mlp":
            backbone: nn.Module = PackedMLP(
                spec.members,
                spec.backbone_inputs,
                head.backbone_outputs,
                hidden=spec.hidden,
                activations=activations,
                dropout=spec.dropout,
                batch_norm=spec.batch_norm,
                output_layer=output_layer,
            )
            if spec.embedding is None and spec.categories is None:
                return backbone
        else:
            backbone = PackedTabM(
                spec.members,
                spec.k,
                spec.backbone_inputs,
                spec.hidden[0],
                len(spec.hidden),
                spec.dropout,
                head.backbone_outputs,
                arch=spec.arch,
                activation=activations[0],
                output_layer=output_layer,
            )
        embedding = None
        if spec.embedding is not None:
            width = spec.in_features - spec.coded
            embedding = build_embedding(spec.members, width, spec.embedding, bins)
        categories = None
        if spec.categories is not None:
            categories = PackedCategoryEmbedding(
                spec.members, spec.categories.sizes, spec.categories.d_embedding
            )
        return Network(backbone, embedding, head, categories)


def build_embedding(
    members: int,
    width: int,
    spec: EmbeddingSpec,
    bins: Sequence[Sequence[torch.Tensor]] | None = None,
) -> PackedNumericEmbedding:
    """The numeric embedding a spec describes over the first ``spec.numeric`` of ``width``
    inputs; a piecewise-linear one holds ``bins`` (each fit's, fitted on its training
    rows), or placeholders a checkpoint's bins replace."""
    if spec.kind == "piecewise_linear":
        shape = (spec.d_embedding, spec.activation, spec.version)
        if bins is None:
            inner: nn.Module = PackedPiecewiseLinearEmbeddings.structure(
                members, spec.numeric, spec.max_bins, *shape
            )
        else:
            inner = PackedPiecewiseLinearEmbeddings(members, bins, *shape, max_bins=spec.max_bins)
    else:
        inner = PackedPeriodicEmbeddings(
            members,
            spec.numeric,
            spec.n_frequencies,
            spec.frequency_init_scale,
            spec.d_embedding,
            spec.lite,
            spec.activation,
        )
    return PackedNumericEmbedding(members, range(spec.numeric), width, inner)


def _activation_after(model: PackedMLP, linear: PackedLinear) -> nn.Module | None:
    """The activation that follows ``linear`` in ``model`` (None for the output layer)."""
    modules = list(model)
    for module in modules[modules.index(linear) + 1 :]:
        if isinstance(module, PackedLinear):
            return None
        if not isinstance(module, PackedBatchNorm1d | PackedDropout):
            return module
    return None


def init_members(
    model: PackedMLP,
    init: Mapping | None,
    generators: list[torch.Generator],
    layer_inits: Mapping | None = None,
) -> PackedMLP:
    """Initialise every member of ``model`` with its own generator, layer by layer.

    ``init`` (and ``layer_inits[i]`` for layer ``i``) holds ``_partial_`` torch.nn.init
    functions for ``weight`` and ``bias``; null keeps torch's ``nn.Linear`` default. Kaiming's
    ``nonlinearity``/``a`` follow the activation after each layer unless set.
    """
    if len(generators) != model.members:
        raise ValueError(f"{model.members} members but {len(generators)} generators")
    linears = model.linears()
    plans = []
    for i, linear in enumerate(linears):
        node = _layer_override(layer_inits, i, "layer_inits") or init
        activation = _activation_after(model, linear)
        fns = []
        for key in ("weight", "bias"):
            fn = _initializer(node, key)
            fns.append(None if fn is None else _with_generator(fn, activation, key == "weight"))
        plans.append((linear, *fns))
    for m, generator in enumerate(generators):  # member-major: member m draws as it would alone
        for linear, weight_fn, bias_fn in plans:
            linear.init_member(m, weight_fn, bias_fn, generator)
    return model


def build_model(
    spec: NetworkSpec,
    generators: list[torch.Generator],
    init: Any,
    layer_inits: Mapping | None = None,
    bins: Sequence[Sequence[torch.Tensor]] | None = None,
) -> PackedMLP | Network:
    """Train time: :func:`build_network` of ``spec``, each member initialised with
    ``generators[m]``: its embedding first (the package's init), then an MLP from ``init``
    (the ``init`` group's node; and ``model.layer_inits``), a TabM as the paper does."""
    network = build_network(spec, bins=bins)
    if not isinstance(network, Network):
        return init_members(network, init, generators, layer_inits)
    if network.embedding is not None:
        network.embedding.init_members(generators)
    if network.categories is not None:
        network.categories.init_members(generators)
    if isinstance(network.backbone, PackedTabM):
        network.backbone.reset_parameters(generators)
    else:
        init_members(network.backbone, init, generators, layer_inits)
    return network


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
