"""Packed layers: M independent models held as one module with batched weights.

Every parameter and buffer has the member index as its first dimension, so member ``m`` of
any state dict is ``tensor[m]``; :func:`select_members` and :func:`stack_members` turn one
packed state dict into per-member ones and back. Activations flow as ``[M, B, F]``.

Randomness in training (dropout masks, RReLU slopes) comes from per-member noise that the
trainer draws once per epoch from each member's own generator and hands to the model with
:meth:`PackedMLP.set_noise`; a layer without noise handed to it draws from torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pricenet.nn.heads import RankBiases


class PackedLinear(nn.Module):
    """``y[m] = x[m] @ weight[m] + bias[m]``: weight ``[M, in, out]``, bias ``[M, 1, out]``."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch's ``nn.Linear`` default init, member by member."""
        for m in range(self.members):
            self.init_member(m, None, None, generator)

    @torch.no_grad()
    def init_member(self, m: int, weight_fn, bias_fn, generator: torch.Generator | None) -> None:
        """Initialise member ``m`` as an ``nn.Linear`` ([out, in] weight) would be.

        ``weight_fn(tensor, generator=...)`` / ``bias_fn`` are ``torch.nn.init`` style
        functions (None: torch's default, kaiming_uniform(a=sqrt(5)) and a uniform bias).
        """
        weight = torch.empty(self.out_features, self.in_features)
        if weight_fn is None:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        else:
            weight_fn(weight, generator=generator)
        bias = torch.empty(self.out_features)
        if bias_fn is None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(bias, -bound, bound, generator=generator)
        else:
            bias_fn(bias, generator=generator)
        self.weight[m].copy_(weight.T)
        self.bias[m, 0].copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class PackedBatchNorm1d(nn.Module):
    """BatchNorm over the rows of each member, ignoring padded rows (``mask`` False).

    Per-member running statistics as ``nn.BatchNorm1d`` keeps them (momentum, unbiased
    running variance); eval mode uses them. A member with fewer than 2 real rows in a batch
    leaves its running statistics untouched.
    """

    def __init__(
        self, members: int, features: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.members, self.features, self.eps, self.momentum = members, features, eps, momentum
        self.weight = nn.Parameter(torch.ones(members, 1, features))
        self.bias = nn.Parameter(torch.zeros(members, 1, features))
        self.register_buffer("running_mean", torch.zeros(members, 1, features))
        self.register_buffer("running_var", torch.ones(members, 1, features))
        self.register_buffer("num_batches_tracked", torch.zeros(members, dtype=torch.long))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not self.training:
            scale = torch.rsqrt(self.running_var + self.eps) * self.weight
            return (x - self.running_mean) * scale + self.bias
        if mask is None:
            n = torch.full((x.shape[0], 1, 1), float(x.shape[1]), device=x.device, dtype=x.dtype)
            mean = x.mean(1, keepdim=True)
            centred = x - mean
            var = (centred * centred).mean(1, keepdim=True)
        else:
            w = mask.unsqueeze(-1).to(x.dtype)
            n = w.sum(1, keepdim=True)
            count = n.clamp_min(1.0)
            mean = (x * w).sum(1, keepdim=True) / count
            centred = x - mean
            var = (centred * centred * w).sum(1, keepdim=True) / count
        with torch.no_grad():
            tracked = n > 1
            unbiased = var * n / (n - 1).clamp_min(1.0)
            mom = self.momentum
            self.running_mean.copy_(
                torch.where(tracked, self.running_mean * (1 - mom) + mean * mom, self.running_mean)
            )
            self.running_var.copy_(
                torch.where(
                    tracked, self.running_var * (1 - mom) + unbiased * mom, self.running_var
                )
            )
            self.num_batches_tracked.add_(tracked.view(-1).long())
        return centred * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"members={self.members}, features={self.features}, eps={self.eps}"


class _Noisy(nn.Module):
    """A layer that needs noise in training: uniforms turned by :meth:`prepare` into what its
    forward multiplies by (see :meth:`PackedMLP.set_noise`), prepared once per epoch."""

    noise: Tensor | None = None

    def prepare(self, uniform: Tensor) -> Tensor:
        raise NotImplementedError

    def factors(self, x: Tensor) -> Tensor:
        noise = self.noise
        if noise is None:
            return self.prepare(torch.rand_like(x))  # a fresh tensor: prepare may overwrite it
        return noise if noise.shape[1] == x.shape[1] else noise[:, : x.shape[1]]


class PackedDropout(_Noisy):
    """Dropout whose mask comes from each member's own noise: keep where ``u >= p``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def prepare(self, uniform: Tensor) -> Tensor:
        """Keep where ``u >= p``, scaled by ``1 / (1 - p)``: overwrites ``uniform``."""
        return uniform.ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.factors(x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PackedRReLU(_Noisy):
    """RReLU: slopes uniform in ``[lower, upper]`` per element in training, their mean in eval."""

    def __init__(self, lower: float = 1 / 8, upper: float = 1 / 3) -> None:
        super().__init__()
        self.lower, self.upper = lower, upper

    def prepare(self, uniform: Tensor) -> Tensor:
        """Slopes uniform in ``[lower, upper]``: overwrites ``uniform``."""
        return uniform.mul_(self.upper - self.lower).add_(self.lower)

    def forward(self, x: Tensor) -> Tensor:
        slope = self.factors(x) if self.training else (self.lower + self.upper) / 2
        return torch.where(x >= 0, x, x * slope)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}"


class PackedPReLU(nn.Module):
    """PReLU with its own learned slope(s) per member: weight ``[M, 1, num_parameters]``."""

    def __init__(self, members: int, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((members, 1, num_parameters), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, x * self.weight)


class PackedRankBiases(nn.Module):
    """CORAL's ``logit_k = score + b_k`` with K-1 biases per member: bias ``[M, 1, K-1]``."""

    def __init__(self, members: int, num_thresholds: int) -> None:
        super().__init__()
        start = torch.linspace(1.0, -1.0, num_thresholds)
        self.bias = nn.Parameter(start.expand(members, 1, num_thresholds).clone())

    def forward(self, score: Tensor) -> Tensor:
        return score + self.bias


def pack_module(module: nn.Module, members: int) -> nn.Module:
    """The packed form of a torch activation or head layer; elementwise ones are kept as is."""
    if isinstance(module, nn.PReLU):
        return PackedPReLU(members, module.num_parameters, float(module.weight.detach()[0]))
    if isinstance(module, nn.RReLU):
        return PackedRReLU(module.lower, module.upper)
    if isinstance(module, nn.Dropout):
        return PackedDropout(module.p)
    if isinstance(module, RankBiases):
        return PackedRankBiases(members, module.bias.numel())
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        raise TypeError(f"{type(module).__name__} holds state and has no packed form")
    return module  # elementwise: acts on [M, B, F] as on [B, F]


class PackedFits:
    """Fit slicing and per-fit noise for a module whose every tensor has the fit as dim 0,
    which can make its own structure for any number of fits (``with_members``) and lists
    its noisy layers in forward order (``noisy_layers``)."""

    def _noisy(self) -> list[_Noisy]:
        """:meth:`noisy_layers`, cached (the trainer hands noise over at every step)."""
        cached = self.__dict__.get("_noisy_cache")
        if cached is None:
            cached = self.__dict__["_noisy_cache"] = self.noisy_layers()
        return cached

    def prepare_noise(self, uniforms: Sequence[Tensor]) -> list[Tensor]:
        """Each noisy layer's factors (mask, slopes) from its uniforms (which it may
        overwrite), contiguous, any shape."""
        layers = self._noisy()
        return [layer.prepare(u).contiguous() for layer, u in zip(layers, uniforms, strict=True)]

    def set_noise(self, noise: Sequence[Tensor] | None) -> None:
        """Hand each noisy layer its prepared factors for the next forward (None: clear;
        the layers then draw from torch's global RNG)."""
        layers = self._noisy()
        # a plain attribute: object.__setattr__ skips nn.Module's (costly) bookkeeping per step
        if noise is None:
            for layer in layers:
                object.__setattr__(layer, "noise", None)
        else:
            for layer, factors in zip(layers, noise, strict=True):
                object.__setattr__(layer, "noise", factors)

    def member(self, m: int) -> nn.Module:
        """Fit ``m`` alone, as an M=1 module (a copy)."""
        single = self.with_members(1).to(next(self.parameters()).device)
        single.load_state_dict(select_members(self.state_dict(), [m]))
        return single

    def from_members(self, states: Sequence[dict[str, Tensor]]) -> nn.Module:
        """This structure holding the given per-fit state dicts (ensembles, best weights)."""
        stacked = stack_members(states)
        packed = self.with_members(len(next(iter(stacked.values()))))
        packed.load_state_dict(stacked)
        return packed


class PackedMLP(PackedFits, nn.Sequential):
    """``PackedLinear -> [PackedBatchNorm1d] -> activation -> [PackedDropout]`` per hidden
    size, then the output layer and the head's extra output layer, if any, for ``members``
    models at once: ``[M, B, in] -> [M, B, out]`` (a ``[B, in]`` input goes to every member).
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (),
        activations: Sequence[nn.Module] = (),
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(activations) != len(hidden):
            raise ValueError(f"{len(hidden)} hidden layers but {len(activations)} activations")
        self.members = members
        self._config = {
            "in_features": in_features,
            "out_features": out_features,
            "hidden": tuple(int(h) for h in hidden),
            "activations": tuple(activations),
            "dropout": dropout,
            "batch_norm": batch_norm,
            "output_layer": output_layer,
        }
        width = in_features
        for size, activation in zip(hidden, activations, strict=True):
            self.append(PackedLinear(members, width, int(size)))
            if batch_norm:
                self.append(PackedBatchNorm1d(members, int(size)))
            self.append(pack_module(activation, members))
            if dropout > 0:
                self.append(PackedDropout(dropout))
            width = int(size)
        self.append(PackedLinear(members, width, out_features))
        if output_layer is not None:
            self.append(pack_module(output_layer, members))

    def with_members(self, members: int) -> PackedMLP:
        """The same structure for ``members`` models, with torch's default init."""
        return PackedMLP(members, **self._config)

    def linears(self) -> list[PackedLinear]:
        return [m for m in self if isinstance(m, PackedLinear)]

    def noisy_layers(self) -> list[_Noisy]:
        """Layers that draw noise in training, in forward order."""
        return [m for m in self if isinstance(m, _Noisy) and not _noise_free(m)]

    def noise_widths(self) -> list[int]:
        """Features of each noisy layer's input (the width of the noise it needs)."""
        widths, width = [], None
        for module in self:
            if isinstance(module, PackedLinear):
                width = module.out_features
            elif isinstance(module, _Noisy) and not _noise_free(module):
                widths.append(width)
        return widths

    def forward(self, x: Tensor, mask: Tensor | None = None, *, direct: bool = False) -> Tensor:
        """``mask`` ``[M, B]`` marks real rows; BatchNorm statistics skip the others.

        ``direct``: call the layers' ``forward`` itself, skipping torch's per-call dispatch
        (hooks, tracing), which costs more than a small layer's work. The trainer's steps use
        it: hooks on the layers do not run in them; hooks on this module do.
        """
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        for module in self._modules.values():
            call = module.forward if direct else module
            x = call(x, mask) if type(module) is PackedBatchNorm1d else call(x)
        return x


def _noise_free(module: nn.Module) -> bool:
    return isinstance(module, PackedDropout) and module.p == 0


def select_members(state: dict[str, Tensor], members: Sequence[int]) -> dict[str, Tensor]:
    """The packed state dict of the chosen members (every tensor indexed on its first dim)."""
    index = list(members)
    return {key: value[index].clone() for key, value in state.items()}


def stack_members(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One packed state dict from per-member packed state dicts (each with M_i members)."""
    return {key: torch.cat([s[key] for s in states]) for key in states[0]}
