"""Checks of a saved trainer state (``last.pt``'s ``trainer``) against the trainer it resumes.

A resumed run is only as trustworthy as the state it loads: torch's own ``load_state_dict``
takes an optimizer's hyper-parameters from the file (``lr=1000``, ``maximize=True``) and
fails, if at all, in the middle of training. Every value is therefore checked here before
anything is loaded, against what this run's config builds: its type, its range, its length
(one per member) and, for tensors, shape, dtype and finiteness. A problem is one
:class:`~pricenet.errors.CheckpointError` naming the file (``where``) and the key.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pricenet.errors import CheckpointError, first_line, shown


def fail(where: str, key: str, problem: str) -> CheckpointError:
    """The one-line error for ``key`` of the state in ``where``."""
    return CheckpointError(f"{where}: {key} {problem}")


def check_mapping(value: Any, keys: Sequence[str], where: str, key: str) -> Mapping[str, Any]:
    """``value`` as a mapping with exactly ``keys`` (string keys, none missing, none extra)."""
    if not isinstance(value, Mapping):
        raise fail(where, key, f"is a {type(value).__name__}, expected a mapping")
    missing = [k for k in keys if k not in value]
    extra = [k for k in value if k not in keys]
    if missing:
        raise fail(where, key, f"lacks {', '.join(map(shown, missing[:3]))}")
    if extra:
        raise fail(where, key, f"has unexpected {', '.join(map(shown, extra[:3]))}")
    return value


def check_list(value: Any, length: int | None, where: str, key: str) -> list[Any]:
    """``value`` as a list (of ``length`` items when given: one per member, say)."""
    if not isinstance(value, list | tuple):
        raise fail(where, key, f"is a {type(value).__name__}, expected a list")
    if length is not None and len(value) != length:
        raise fail(where, key, f"has {len(value)} item(s), expected {length}")
    return list(value)


def check_int(value: Any, low: int, high: int | None, where: str, key: str) -> int:
    """An integer (not a bool) in ``low..high`` (``high`` None: no upper bound)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(where, key, f"is {shown(value)}, expected an integer")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise fail(where, key, f"is {value}, expected {bound}")
    return value


def check_number(value: Any, where: str, key: str, finite: bool = True) -> float:
    """A real number (not a bool), finite unless ``finite`` is False (NaN is never allowed)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise fail(where, key, f"is {shown(value)}, expected a number")
    if math.isnan(value) or (finite and math.isinf(value)):
        raise fail(where, key, f"is {value}, expected a finite number")
    return float(value)


def check_scores(value: Any, members: int, width: int, where: str, key: str) -> None:
    """Per member a best score: ``width`` finite numbers, or ``[-inf]`` before any epoch."""
    for m, score in enumerate(check_list(value, members, where, key)):
        item = f"{key}[{m}]"
        score = check_list(score, None, where, item)
        if len(score) == 1 and score[0] == -math.inf:
            continue
        check_list(score, width, where, item)
        for i, number in enumerate(score):
            check_number(number, where, f"{item}[{i}]")


def check_tensor(
    value: Any, reference: torch.Tensor, where: str, key: str, *, finite: bool = True
) -> torch.Tensor:
    """A dense tensor with ``reference``'s shape and dtype (finite, for floating tensors)."""
    if not isinstance(value, torch.Tensor):
        raise fail(where, key, f"is a {type(value).__name__}, expected a tensor")
    if value.layout != torch.strided or value.is_meta:
        raise fail(where, key, f"is a {value.layout} tensor, expected a dense one")
    if value.shape != reference.shape:
        raise fail(where, key, f"has shape {tuple(value.shape)}, expected {tuple(reference.shape)}")
    if value.dtype != reference.dtype:
        raise fail(where, key, f"has dtype {value.dtype}, expected {reference.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise fail(where, key, "holds NaN or infinite values")
    return value


def same(saved: Any, expected: Any) -> bool:
    """Whether two state values are equal: numbers by value, bools only to bools, sequences
    item by item (a tuple equals a list), tensors by dtype, shape and values."""
    if isinstance(expected, torch.Tensor) or isinstance(saved, torch.Tensor):
        return (
            isinstance(saved, torch.Tensor)
            and isinstance(expected, torch.Tensor)
            and saved.dtype == expected.dtype
            and saved.shape == expected.shape
            and bool(torch.equal(saved.cpu(), expected.cpu()))
        )
    if isinstance(expected, bool) or isinstance(saved, bool):
        return type(saved) is type(expected) and saved == expected
    if isinstance(expected, list | tuple):
        return (
            isinstance(saved, list | tuple)
            and len(saved) == len(expected)
            and all(same(s, e) for s, e in zip(saved, expected, strict=True))
        )
    if isinstance(expected, Mapping):
        return (
            isinstance(saved, Mapping)
            and saved.keys() == expected.keys()
            and all(same(saved[k], expected[k]) for k in expected)
        )
    if isinstance(expected, int | float) and isinstance(saved, int | float):
        return saved == expected
    return type(saved) is type(expected) and saved == expected


def differences(saved: Mapping[str, Any], expected: Mapping[str, Any], ignore: set[str]) -> list:
    """The keys of ``expected`` (all but ``ignore``) whose saved value differs."""
    return [k for k in expected if k not in ignore and not same(saved.get(k), expected[k])]


def replay(optimizer: torch.optim.Optimizer, scheduler: Any, epochs: int) -> tuple[Any, Any]:
    """Copies of a freshly built ``optimizer`` and its ``scheduler`` after ``epochs`` scheduler
    steps: the lr (and scheduler state) the config gives at that epoch. The parameters are
    not copied."""
    memo = {id(p): torch.empty(0) for g in optimizer.param_groups for p in g["params"]}
    optimizer, scheduler = copy.deepcopy((optimizer, scheduler), memo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(epochs):
            scheduler.step()
    return optimizer, scheduler


def reference_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    """The per-parameter state ``optimizer`` keeps after one step: the keys, shapes and dtypes
    a saved state must have (a copy steps on zero gradients; ``optimizer`` is untouched)."""
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": []}
        for g in optimizer.param_groups
    ]
    params = []
    for group, original in zip(groups, optimizer.param_groups, strict=True):
        for p in original["params"]:
            copy_ = torch.zeros_like(p.detach(), device="cpu", requires_grad=True)
            copy_.grad = torch.zeros_like(copy_)
            group["params"].append(copy_)
            params.append(copy_)
    probe = type(optimizer)(groups)
    with torch.no_grad():
        probe.step()
    return {i: dict(probe.state.get(p, {})) for i, p in enumerate(params)}


# L-BFGS keeps one state for all parameters, on the first one: directions over the flattened
# parameters, a history of at most history_size of them, and counters.
LBFGS_FLAT = ("d", "prev_flat_grad")
LBFGS_HISTORY = ("old_dirs", "old_stps", "ro")
LBFGS_SCALAR = ("t", "H_diag", "prev_loss")
LBFGS_COUNT = ("func_evals", "n_iter")
LBFGS_KEYS = (*LBFGS_COUNT, *LBFGS_FLAT, *LBFGS_HISTORY, *LBFGS_SCALAR, "al")


def _check_scalar(value: Any, where: str, key: str) -> None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise fail(where, key, f"is a {tuple(value.shape)} {value.dtype} tensor, expected one")
        value = value.item()
    check_number(value, where, key)


def check_lbfgs_state(state: Any, optimizer: torch.optim.Optimizer, where: str, key: str) -> None:
    """L-BFGS's state: known keys, tensors over the flattened parameters, a bounded history."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype)
    history = optimizer.param_groups[0]["history_size"]
    extra = [k for k in state if k not in LBFGS_KEYS]
    if extra:
        raise fail(where, key, f"has unexpected {', '.join(map(shown, extra[:3]))}")
    for name in LBFGS_COUNT:
        check_int(state.get(name, 0), 0, None, where, f"{key}.{name}")
    if state.get("n_iter", 0) == 0:
        return
    missing = [k for k in LBFGS_KEYS if k != "al" and k not in state]
    if missing:
        raise fail(where, key, f"lacks {', '.join(map(shown, missing[:3]))}")
    for name in LBFGS_FLAT:
        check_tensor(state[name], flat, where, f"{key}.{name}")
    for name in LBFGS_SCALAR:
        _check_scalar(state[name], where, f"{key}.{name}")
    dirs = check_list(state["old_dirs"], None, where, f"{key}.old_dirs")
    if len(dirs) > history:
        raise fail(where, f"{key}.old_dirs", f"has {len(dirs)} items, at most {history}")
    for name in LBFGS_HISTORY:
        items = check_list(state[name], len(dirs), where, f"{key}.{name}")
        for i, item in enumerate(items):
            if name == "ro":
                _check_scalar(item, where, f"{key}.{name}[{i}]")
            else:
                check_tensor(item, flat, where, f"{key}.{name}[{i}]")
    if "al" in state:
        for i, item in enumerate(check_list(state["al"], history, where, f"{key}.al")):
            if item is not None:
                _check_scalar(item, where, f"{key}.al[{i}]")


def check_optimizer_state(
    saved: Any,
    optimizer: torch.optim.Optimizer,
    expected_groups: list[dict[str, Any]],
    epoch: int,
    max_step: int,
    where: str,
) -> None:
    """A saved ``optimizer.state_dict()`` against this run's ``optimizer`` (freshly built):

    - every hyper-parameter of every param group equals ``expected_groups`` (the config's
      values, the lr as its scheduler sets it at the saved ``epoch``); the differing keys are
      named;
    - each parameter's state has the keys this optimizer keeps, tensors shaped like the
      parameter with its dtype and finite values, step counts in ``0..max_step``.
    """
    saved = check_mapping(saved, ("state", "param_groups"), where, "optimizer")
    groups = check_list(
        saved["param_groups"], len(expected_groups), where, "optimizer.param_groups"
    )
    start = 0
    for g, (group, expected) in enumerate(zip(groups, expected_groups, strict=True)):
        name = "optimizer" if len(groups) == 1 else f"optimizer.param_groups[{g}]"
        group = check_mapping(group, list(expected), where, name)
        indices = list(range(start, start + len(expected["params"])))
        start += len(indices)
        if not same(group["params"], indices):
            raise fail(where, f"{name}.params", f"is {shown(group['params'])}, expected {indices}")
        differ = differences(group, expected, {"params"})
        if differ:
            scheduled = expected["lr"] != expected.get("initial_lr", expected["lr"])
            raise CheckpointError(
                f"{where}: "
                + "; ".join(
                    f"{name} {k} is {shown(group[k])} in the checkpoint but "
                    f"{shown(expected[k])} in the config"
                    + (f" (its schedule's lr at epoch {epoch})" if k == "lr" and scheduled else "")
                    for k in differ
                )
            )
    state = saved["state"]
    if not isinstance(state, Mapping):
        raise fail(where, "optimizer.state", f"is a {type(state).__name__}, expected a mapping")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    unknown = [k for k in state if not isinstance(k, int) or not 0 <= k < len(params)]
    if unknown:
        raise fail(where, "optimizer.state", f"has unknown parameter index {shown(unknown[0])}")
    if isinstance(optimizer, torch.optim.LBFGS):
        for index, value in state.items():
            key = f"optimizer.state[{index}]"
            if index != 0:
                raise fail(where, key, "is set, but L-BFGS keeps its state on parameter 0")
            check_lbfgs_state(check_mapping(value, list(value), where, key), optimizer, where, key)
        return
    reference = reference_state(optimizer)
    if state and len(state) != len(params):
        raise fail(where, "optimizer.state", f"covers {len(state)} of {len(params)} parameters")
    for index, value in state.items():
        key = f"optimizer.state[{index}]"
        value = check_mapping(value, list(reference[index]), where, key)
        for name, expected in reference[index].items():
            item = f"{key}.{name}"
            if isinstance(expected, torch.Tensor):
                check_tensor(value[name], expected, where, item)
                if name == "step":
                    count = float(value[name])
                    if count != int(count) or not 0 <= count <= max_step:
                        raise fail(where, item, f"is {count:g}, expected a count in 0..{max_step}")
            elif type(value[name]) is not type(expected):
                raise fail(where, item, f"is {shown(value[name])}, expected {shown(expected)}")
            elif isinstance(expected, float):
                check_number(value[name], where, item)


def check_rng_state(value: Any, reference: torch.Tensor, where: str, key: str) -> None:
    """A generator state: a byte tensor of the right size that torch accepts."""
    check_tensor(value, reference, where, key)
    try:
        torch.Generator().set_state(value.cpu())
    except RuntimeError as err:
        raise fail(where, key, f"is not a generator state ({first_line(err, 'refused')})") from None
