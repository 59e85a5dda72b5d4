"""Up-front checks of every ``_target_`` node, before any run folder is made or data is read.

Hydra only finds out that ``+activation.foo=1`` or ``+init.weight.foo=1`` is wrong when the
model is built, after the run folder exists, with a multi-line traceback. Here every node is
checked first: its arguments are bound to its target's signature, and the cheap ones are
built on a probe (the activation on a tensor, the init on a weight, the optimizer on a
parameter), so a wrong name or value becomes one :class:`ConfigError` line naming the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Set
from typing import Any

import torch
from hydra._internal.utils import _locate  # get_object without its error log (hydra < 1.4)
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pricenet.errors import ConfigError, Problems, first_line

# Hydra's own keys in a ``_target_`` node: never arguments of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# Built and checked by :func:`check_factories` (they need a parameter / an optimizer).
FACTORY_GROUPS = ("optim", "scheduler")


def _innermost(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _fail(key: str, target: Any, err: BaseException) -> ConfigError:
    cause = _innermost(err)
    return ConfigError(f"{key} ({target}): {type(cause).__name__}: {first_line(cause, '')}")


def target_nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every ``(dotted key, node)`` under ``node`` that has a ``_target_``, outermost first."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield prefix.rstrip("."), node
        for key in node:
            if OmegaConf.is_missing(node, key):
                continue
            try:
                child = node[key]
            except OmegaConfBaseException as err:  # a broken interpolation
                raise ConfigError(f"{prefix}{key}: {first_line(err)}") from None
            yield from target_nodes(child, f"{prefix}{key}.")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from target_nodes(item, f"{prefix}{i}.")


def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have none: nothing to bind against
        return None


def check_arguments(key: str, node: DictConfig) -> Callable[..., Any]:
    """Resolve ``node._target_`` and bind the node's arguments to its signature.

    Returns the target. Raises :class:`ConfigError` naming ``key`` when the target cannot
    be found or an argument has no parameter of that name.
    """
    name = node.get("_target_")
    try:
        target = _locate(str(name))
    except Exception as err:
        raise _fail(key, name, err) from err
    if not callable(target):
        raise ConfigError(f"{key} ({name}): _target_ is not a class or a function")
    signature = _signature(target)
    if signature is None:
        return target
    try:
        values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {first_line(err)}") from None
    assert isinstance(values, dict)
    kwargs = {k: v for k, v in values.items() if k not in HYDRA_KEYS}
    args = values.get("_args_") or []
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unexpected = [k for k in kwargs if k not in params and not takes_any]
    if unexpected:
        allowed = [
            p.name
            for p in params.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        raise ConfigError(
            f"{key} ({name}): unexpected argument {unexpected[0]!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    try:
        signature.bind_partial(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{key} ({name}): {first_line(err)}") from err
    return target


def _probe_activation(module: Any) -> None:
    # Not run on a probe tensor: its width (PReLU's num_parameters) is the layer's, unknown here.
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"builds a {type(module).__name__}, not a torch.nn.Module")


def _probe_init(fn: Any, shape: tuple[int, ...]) -> None:
    if not callable(fn):
        raise TypeError("is not a function (did you forget _partial_: true?)")
    fn(torch.empty(shape))


def _probe_head(head: Any) -> None:
    for attr in ("num_classes", "backbone_outputs", "encode", "decode"):
        if not hasattr(head, attr):
            raise TypeError(f"builds a {type(head).__name__}, which is not a pricenet head")


def _probe_criterion(criterion: Any) -> None:
    if not isinstance(criterion, torch.nn.Module):
        raise TypeError(f"builds a {type(criterion).__name__}, not a torch.nn.Module loss")


def _probe_for(key: str) -> Callable[[Any], None] | None:
    """How to try out the object built from the node at ``key`` (None: bind only)."""
    parts = key.split(".")
    if key == "activation" or parts[:2] == ["model", "layer_activations"]:
        return _probe_activation
    if key == "loss.head":
        return _probe_head
    if key == "loss.criterion":
        return _probe_criterion
    is_init = parts[0] == "init" or parts[:2] == ["model", "layer_inits"]
    if is_init and parts[-1] == "weight":
        return lambda fn: _probe_init(fn, (3, 4))
    if is_init and parts[-1] == "bias":
        return lambda fn: _probe_init(fn, (3,))
    return None


def _check_target(key: str, node: DictConfig) -> None:
    check_arguments(key, node)
    probe = _probe_for(key)
    if probe is None:
        return
    try:
        probe(instantiate(node, _convert_="all"))
    except Exception as err:
        raise _fail(key, node.get("_target_"), err) from err


def check_targets(cfg: DictConfig, problems: Problems, skip: Set[str] = frozenset()) -> None:
    """Check every ``_target_`` node's arguments; build and probe the cheap ones.

    The data source and the model are only bound (building them reads data or needs the
    data's width); the optimizer and scheduler are left to :func:`check_factories`. Each
    node's problem goes to ``problems``; a broken interpolation ends the walk. Nodes in the
    groups ``skip`` names are left out.
    """
    try:
        for key, node in target_nodes(cfg):
            if key.split(".")[0] not in {*FACTORY_GROUPS, *skip}:
                problems.run(_check_target, key, node)
    except ConfigError as err:
        problems.add(str(err))


def check_factories(
    cfg: DictConfig, problems: Problems | None = None, skip: Set[str] = frozenset()
) -> None:
    """Check every ``_target_`` node, then build the optimizer and scheduler on a probe.

    An argument torch rejects (betas, momentum, ``+optim.typo=1``, ``+activation.foo=1``)
    becomes a problem, before any data is read or any run folder is made: gathered in
    ``problems`` when given, else raised as one :class:`ConfigError`. The scheduler is tried
    only on an optimizer that could be built; the groups ``skip`` names are not checked.
    """
    gathered = Problems() if problems is None else problems
    check_targets(cfg, gathered, skip)
    optimizer = None
    if "optim" not in skip:
        probe = [torch.nn.Parameter(torch.zeros(1))]
        optimizer = gathered.run(_build_factory, cfg, "optim", probe)
    if optimizer is not None and "scheduler" not in skip:
        gathered.run(_build_factory, cfg, "scheduler", optimizer)
    if problems is None:
        gathered.raise_if_any()


def _build_factory(cfg: DictConfig, key: str, argument: Any) -> Any:
    """``cfg[key]`` instantiated (a partial) and called on ``argument``, or ConfigError."""
    try:
        return instantiate(cfg[key], _convert_="all")(argument)
    except Exception as err:
        raise _fail(key, cfg[key].get("_target_"), err) from err
