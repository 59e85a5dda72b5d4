"""The MLP assembled from the model, activation and init configs."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from pricenet.errors import ConfigError
from pricenet.spec import NetworkSpec, build_activation, build_head

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
    fn = instantiate(node[key])
    if not callable(fn):
        raise ConfigError(f"init.{key} must be a function (did you forget _partial_: true?)")
    return fn


def init_linear(layer: nn.Linear, init: Mapping | None, activation: nn.Module | None) -> None:
    """Apply ``init.weight``/``init.bias`` to ``layer``; kaiming follows ``activation``."""
    weight_fn = _initializer(init, "weight")
    bias_fn = _initializer(init, "bias")
    with torch.no_grad():
        if weight_fn is not None:
            target = weight_fn.func if isinstance(weight_fn, functools.partial) else weight_fn
            params = inspect.signature(target).parameters
            given = weight_fn.keywords if isinstance(weight_fn, functools.partial) else {}
            extra = {
                k: v for k, v in kaiming_args(activation).items() if k in params and k not in given
            }
            weight_fn(layer.weight, **extra)
        if bias_fn is not None and layer.bias is not None:
            bias_fn(layer.bias)


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


class MLP(nn.Sequential):
    """``Linear -> [BatchNorm] -> activation -> [Dropout]`` per hidden size, then a Linear head.

    ``hidden=[]`` gives a linear (softmax-regression) model. ``layer_activations`` and
    ``layer_inits`` map a layer index to a config that replaces the group default for that
    layer (the output layer has index ``len(hidden)``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int],
        activation: Mapping,
        init: Mapping | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
        layer_activations: Mapping | None = None,
        layer_inits: Mapping | None = None,
    ) -> None:
        super().__init__()
        width = in_features
        for i, size in enumerate(hidden):
            act_cfg = _layer_override(layer_activations, i, "layer_activations") or activation
            act = instantiate(act_cfg)
            linear = nn.Linear(width, int(size))
            init_linear(linear, _layer_override(layer_inits, i, "layer_inits") or init, act)
            self.append(linear)
            if batch_norm:
                self.append(nn.BatchNorm1d(int(size)))
            self.append(act)
            if dropout > 0:
                self.append(nn.Dropout(dropout))
            width = int(size)
        out = nn.Linear(width, out_features)
        init_linear(out, _layer_override(layer_inits, len(hidden), "layer_inits") or init, None)
        self.append(out)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(cfg: Mapping, in_features: int) -> nn.Module:
    """The model of a resolved config: ``cfg.model`` built with ``cfg.activation``/``cfg.init``.

    Its outputs are what ``cfg.loss.head`` needs, including any output layer the head adds.
    """
    head = instantiate(cfg["loss"]["head"])
    model = instantiate(
        cfg["model"],
        in_features=in_features,
        out_features=head.backbone_outputs,
        activation=cfg["activation"],
        init=cfg["init"],
        _recursive_=False,
    )
    extra = head.output_layer()
    if extra is not None:
        model.append(extra)
    return model


def build_network(spec: NetworkSpec) -> nn.Sequential:
    """The network a checked :class:`NetworkSpec` describes, with torch's default init.

    This is the loading path: weights come from the checkpoint next, and nothing here imports
    or instantiates anything by name.
    """
    if spec.members != 1:
        raise ConfigError(f"a network of {spec.members} members needs the packed model")
    network = nn.Sequential()
    width = spec.in_features
    for size, activation in zip(spec.hidden, spec.activations, strict=True):
        network.append(nn.Linear(width, size))
        if spec.batch_norm:
            network.append(nn.BatchNorm1d(size))
        network.append(build_activation(activation))
        if spec.dropout > 0:
            network.append(nn.Dropout(spec.dropout))
        width = size
    head = build_head(spec.head, spec.num_classes)
    network.append(nn.Linear(width, head.backbone_outputs))
    extra = head.output_layer()
    if extra is not None:
        network.append(extra)
    return network
