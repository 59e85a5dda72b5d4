"""TabM (Gorishniy et al., 2024) for the packed engine: M independent fits, each a TabM of k
submodels, in one module.

Every parameter has the fit index as dim 0, so fit ``m`` of any state dict is ``tensor[m]``
(:func:`~pricenet.nn.packed.select_members` / :func:`~pricenet.nn.packed.stack_members` split
and stack fits as for :class:`~pricenet.nn.packed.PackedMLP`); fits never share a weight. The
submodel index is dim 1 of every per-submodel tensor.

Architectures (``arch``), each ``blocks`` blocks of ``linear -> activation -> dropout`` of
``width`` units, then k independent linear heads (TabM's ``LinearEnsemble``):

- ``tabm``: BatchEnsemble linears, per fit a shared ``weight [M, in, out]`` and per-submodel
  adapters ``r [M, k, in]``, ``s [M, k, out]``, ``bias [M, k, out]``:
  ``y = ((x * r) @ weight) * s + bias``.
- ``mini``: one per-submodel input scaling ``r [M, k, in]``, then plain shared linears.
- ``packed``: k fully independent MLPs per fit (weights ``[M, k, in, out]``).

Initialisation is the reference implementation's (the ``tabm`` package, 0.0.3, with
``TabM.make``'s defaults), drawn per fit from that fit's own generator in the package's order,
so fit ``m`` starts where ``torch.manual_seed(seed); TabM.make(...)`` does for the same seed,
whatever M is: linears' weights and the heads are uniform in ``±1/sqrt(in)``; a BatchEnsemble
bias is one such vector shared by the k submodels at init; the first ``r`` (``tabm``, ``mini``)
is random signs (or standard normal), one value per feature chunk; every other ``r`` and
every ``s`` are ones; ``mini``'s shared linears are torch's ``nn.Linear`` default.

The engine's contract:

- input ``[M, B, in]`` (or ``[B, in]``, given to every fit) -> output ``[M, B, k, outputs]``
  (a view: k submodels per fit, ``outputs`` the head's backbone outputs, then its extra
  output layer, e.g. CORAL's rank biases, per submodel).
- training loss: each submodel's loss on the row, averaged over the k submodels (TabM trains
  the k submodels on the same batch, the mean of their losses); every fit's loss is its own.
  With the engine's per-fit mean over real rows this is ``out.flatten(1, 2)`` (``[M, B * k,
  o]``) against targets and mask repeated k times per row (``repeat_interleave(k, 1)``).
- predictions, validation score, early stopping: the ensemble's, the k submodels combined in
  the head's space, :func:`combine_submodels` (``head.combine`` over k: mean of the
  probabilities for the categorical head) -> ``[M, B, outputs]``.
- dropout: per fit exact noise through :meth:`PackedTabM.noise_widths`,
  :meth:`~PackedTabM.prepare_noise` and :meth:`~PackedTabM.set_noise`, as PackedMLP's: a
  noisy layer's factors are ``[M, B, k * width]`` (an independent mask per row, submodel and
  unit, as TabM's ``nn.Dropout`` on ``[B, k, width]``).
- no batch norm (``mask`` is accepted and ignored); activations are stateless, noiseless
  elementwise modules (ReLU, GELU, ...).
- cost: a step does k plain MLPs' work on the batch (k x batch rows through every hidden
  matmul). On one CPU thread, batch 256 (BENCHMARKS.md, "TabM: what a fit costs on CPU"):
  width 128, 2 blocks: k=2 about 1.6x a plain MLP, k=4 2.5x, k=8 4.2x, k=32 16x; width 256,
  3 blocks: k=8 7x, k=32 31x. The matmuls already run near one core's peak (torch.profiler:
  75-86 GMAC/s for the k=8 layers on an AVX-512 Xeon), so the ratio tends to k as width x
  batch grows; only the shared parts (input layer, Adam, loss) keep it below. A hand-written
  backward for the adapted weights (``r^T * W * s``: two temporaries instead of four) was
  30-45% faster alone and made no measurable difference to a step, so it is not here.

Layout: activations flow as ``[M, k, B, d]``, so a shared weight is one ``bmm`` per fit over
``k * B`` rows, and the k heads (and ``packed``'s linears) one ``baddbmm`` over ``M * k``. A
BatchEnsemble layer applies its adapters to the rows (``((x * r) @ W) * s``) when the layer is
wide against the batch, else to the weight (``x @ (r^T * W * s)``, k weights made per step):
measured on one CPU thread, batch 256, width 64, k 32: 3.2 ms against 6.3 ms per forward and
backward; width 512: 132 ms on the rows against 188 ms on the weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from pricenet.nn.heads import Head, RankBiases
from pricenet.nn.packed import PackedDropout, PackedFits

Arch = Literal["tabm", "mini", "packed"]
ARCHS: tuple[str, ...] = ("tabm", "mini", "packed")
ScalingInit = Literal["random-signs", "normal"]
SCALING_INITS: tuple[str, ...] = ("random-signs", "normal")


# ---------------------------------------------------------------------------- initialisation


def _rsqrt_uniform(tensor: Tensor, d: int, generator: torch.Generator | None) -> Tensor:
    """Uniform in ``±1/sqrt(d)`` (the package's ``_init_rsqrt_uniform_``)."""
    bound = d**-0.5
    return nn.init.uniform_(tensor, -bound, bound, generator=generator)


def _scaling(
    shape: tuple[int, int],
    init: ScalingInit,
    chunks: Sequence[int],
    generator: torch.Generator | None,
) -> Tensor:
    """The package's ``init_scaling_(x, init, chunks)``: one random value per row and chunk of
    the last dim, drawn chunk by chunk (so the draws are the package's)."""
    x = torch.empty(shape)
    start = 0
    for size in chunks:
        value = torch.empty(shape[0], 1)
        if init == "random-signs":
            value.bernoulli_(0.5, generator=generator).mul_(2).add_(-1)
        else:
            nn.init.normal_(value, generator=generator)
        x[:, start : start + size] = value
        start += size
    return x


# ---------------------------------------------------------------------------- layers


class PackedBatchEnsembleLinear(nn.Module):
    """BatchEnsemble linear of M fits x k submodels: ``y[m, i] = ((x[m, i] * r[m, i]) @
    weight[m]) * s[m, i] + bias[m, i]`` on ``[M, k, B, in]`` (or ``[M, 1, B, in]``, the same
    rows for every submodel) -> ``[M, k, B, out]``."""

    def __init__(self, members: int, k: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.k = members, k
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.r = nn.Parameter(torch.ones(members, k, in_features))
        self.s = nn.Parameter(torch.ones(members, k, out_features))
        self.bias = nn.Parameter(torch.empty(members, k, out_features))

    @torch.no_grad()
    def init_member(
        self,
        m: int,
        generator: torch.Generator | None,
        r_init: ScalingInit | None = None,
        chunks: Sequence[int] | None = None,
    ) -> None:
        """Fit ``m`` as the package's ``LinearBatchEnsemble`` with TabM's init: ``r`` from
        ``r_init`` (None: ones) by ``chunks`` of features, ``s`` ones, one shared bias."""
        weight = _rsqrt_uniform(
            torch.empty(self.out_features, self.in_features), self.in_features, generator
        )
        self.weight[m].copy_(weight.T)
        if r_init is None:
            self.r[m].fill_(1.0)
        else:
            chunks = chunks if chunks is not None else [1] * self.in_features
            self.r[m].copy_(_scaling((self.k, self.in_features), r_init, chunks, generator))
        self.s[m].fill_(1.0)
        bias = _rsqrt_uniform(torch.empty(self.out_features), self.in_features, generator)
        self.bias[m].copy_(bias.expand(self.k, -1))

    def forward(self, x: Tensor) -> Tensor:
        rows = x.shape[2]
        if (
            rows * (self.in_features + self.out_features)
            >= 2 * self.in_features * self.out_features
        ):
            return self._through_weights(x)
        return self._through_rows(x)

    def _through_rows(self, x: Tensor) -> Tensor:
        """The adapters on the activations: ``((x * r) @ W) * s + bias``, one ``bmm`` of
        ``k * B`` rows per fit (cheaper when the layer is wide and the batch small)."""
        scaled = x * self.r.unsqueeze(2)  # [M, k, B, in]
        members, k, rows, _ = scaled.shape
        y = torch.bmm(scaled.reshape(members, k * rows, self.in_features), self.weight)
        return torch.addcmul(
            self.bias.unsqueeze(2), y.view(members, k, rows, -1), self.s.unsqueeze(2)
        )

    def _through_weights(self, x: Tensor) -> Tensor:
        """The adapters on the weight: ``x @ (r^T * W * s) + bias``, k weights per fit made
        first (the same values to rounding; cheaper when the batch is large against the
        layer: measured 2x faster at batch 256, width 64, k 32)."""
        members, rows, k = x.shape[0], x.shape[2], self.k
        weight = self.r.unsqueeze(3) * self.weight.unsqueeze(1) * self.s.unsqueeze(2)
        flat = x.expand(members, k, rows, self.in_features).reshape(members * k, rows, -1)
        y = torch.baddbmm(
            self.bias.view(members * k, 1, -1),
            flat,
            weight.view(members * k, self.in_features, -1),
        )
        return y.view(members, k, rows, -1)

    def extra_repr(self) -> str:
        return f"members={self.members}, k={self.k}, in={self.in_features}, out={self.out_features}"


class PackedScaleEnsemble(nn.Module):
    """``mini``'s per-submodel input scaling (the package's ``ElementwiseAffine`` without bias):
    ``y[m, i] = x[m, i] * r[m, i]``, ``r [M, k, in]``."""

    def __init__(self, members: int, k: int, in_features: int) -> None:
        super().__init__()
        self.members, self.k, self.in_features = members, k, in_features
        self.r = nn.Parameter(torch.ones(members, k, in_features))

    @torch.no_grad()
    def init_member(
        self,
        m: int,
        generator: torch.Generator | None,
        r_init: ScalingInit = "random-signs",
        chunks: Sequence[int] | None = None,
    ) -> None:
        chunks = chunks if chunks is not None else [1] * self.in_features
        self.r[m].copy_(_scaling((self.k, self.in_features), r_init, chunks, generator))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.r.unsqueeze(2)

    def extra_repr(self) -> str:
        return f"members={self.members}, k={self.k}, in={self.in_features}"


class PackedSharedLinear(nn.Module):
    """``mini``'s shared linear: one ``nn.Linear`` per fit for its k submodels, weight
    ``[M, in, out]``, bias ``[M, 1, out]``; ``[M, k, B, in] -> [M, k, B, out]``."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))

    @torch.no_grad()
    def init_member(self, m: int, generator: torch.Generator | None) -> None:
        """torch's ``nn.Linear`` default (kaiming_uniform(a=sqrt(5)), uniform bias)."""
        weight = torch.empty(self.out_features, self.in_features)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(self.in_features)
        bias = nn.init.uniform_(torch.empty(self.out_features), -bound, bound, generator=generator)
        self.weight[m].copy_(weight.T)
        self.bias[m, 0].copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        members, k, rows, _ = x.shape
        flat = x.reshape(members, k * rows, self.in_features)
        return torch.baddbmm(self.bias, flat, self.weight).view(members, k, rows, -1)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class PackedLinearEnsemble(nn.Module):
    """k independent linears per fit (the package's ``LinearEnsemble``): weight
    ``[M, k, in, out]``, bias ``[M, k, out]``; ``[M, k|1, B, in] -> [M, k, B, out]``."""

    def __init__(self, members: int, k: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.k = members, k
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, k, out_features))

    @torch.no_grad()
    def init_member(self, m: int, generator: torch.Generator | None) -> None:
        """Uniform in ``±1/sqrt(in)``, weight then bias, as the package draws them."""
        weight = torch.empty(self.k, self.in_features, self.out_features)
        bias = torch.empty(self.k, self.out_features)
        self.weight[m].copy_(_rsqrt_uniform(weight, self.in_features, generator))
        self.bias[m].copy_(_rsqrt_uniform(bias, self.in_features, generator))

    def forward(self, x: Tensor) -> Tensor:
        members, _, rows, _ = x.shape
        k = self.k
        flat = x.expand(members, k, rows, self.in_features).reshape(members * k, rows, -1)
        y = torch.baddbmm(
            self.bias.view(members * k, 1, -1),
            flat,
            self.weight.view(members * k, self.in_features, -1),
        )
        return y.view(members, k, rows, -1)

    def extra_repr(self) -> str:
        return f"members={self.members}, k={self.k}, in={self.in_features}, out={self.out_features}"


class PackedRankBiasesEnsemble(nn.Module):
    """CORAL's K-1 rank biases per fit and submodel: bias ``[M, k, K-1]`` (``RankBiases``'
    init for each), on ``[M, k, B, 1]`` scores."""

    def __init__(self, members: int, k: int, num_thresholds: int) -> None:
        super().__init__()
        start = torch.linspace(1.0, -1.0, num_thresholds)
        self.bias = nn.Parameter(start.expand(members, k, num_thresholds).clone())

    def forward(self, score: Tensor) -> Tensor:
        return score + self.bias.unsqueeze(2)


class TabMDropout(PackedDropout):
    """Dropout on ``[M, k, B, d]`` whose factors come as ``[M, B, k * d]`` per fit (see
    :meth:`PackedTabM.set_noise`): an independent mask per row, submodel and unit."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        members, k, rows, width = x.shape
        noise = self.noise
        if noise is None:
            return x * self.prepare(torch.rand_like(x))
        if noise.shape[1] != rows:
            noise = noise[:, :rows]
        return x * noise.view(members, rows, k, width).transpose(1, 2)


# ---------------------------------------------------------------------------- the model


def _check_activation(activation: nn.Module) -> nn.Module:
    if isinstance(activation, nn.RReLU | nn.Dropout):
        raise TypeError(f"{type(activation).__name__} draws noise: not a TabM activation")
    if any(True for _ in activation.parameters()) or any(True for _ in activation.buffers()):
        raise TypeError(f"{type(activation).__name__} holds state: not a TabM activation")
    return activation


class PackedTabM(PackedFits, nn.Sequential):
    """M independent TabMs of k submodels each; see the module docstring.

    ``[M, B, in]`` (or ``[B, in]``) -> ``[M, B, k, outputs]``. ``output_layer``: the head's
    extra layer (``RankBiases`` for CORAL, held per submodel), or None. ``chunks``: feature
    sizes of the input (one value of the first scaling per chunk; default one per column).
    """

    def __init__(
        self,
        members: int,
        k: int,
        in_features: int,
        width: int,
        blocks: int,
        dropout: float,
        outputs: int,
        arch: Arch = "tabm",
        activation: nn.Module | None = None,
        *,
        output_layer: nn.Module | None = None,
        scaling_init: ScalingInit = "random-signs",
        chunks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} is not one of {', '.join(ARCHS)}")
        if scaling_init not in SCALING_INITS:
            raise ValueError(f"scaling_init {scaling_init!r} is not one of {SCALING_INITS}")
        for name, value in (
            ("members", members),
            ("k", k),
            ("in_features", in_features),
            ("width", width),
            ("blocks", blocks),
            ("outputs", outputs),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if chunks is not None and (sum(chunks) != in_features or min(chunks) < 1):
            raise ValueError(f"chunks {list(chunks)} do not split {in_features} features")
        if output_layer is not None and not isinstance(output_layer, RankBiases):
            raise TypeError(f"{type(output_layer).__name__} has no TabM form")
        activation = _check_activation(activation if activation is not None else nn.ReLU())
        self.members, self.k, self.arch = members, k, arch
        self._config = {
            "k": k,
            "in_features": in_features,
            "width": width,
            "blocks": blocks,
            "dropout": dropout,
            "outputs": outputs,
            "arch": arch,
            "activation": activation,
            "output_layer": output_layer,
            "scaling_init": scaling_init,
            "chunks": None if chunks is None else tuple(chunks),
        }
        if arch == "mini":
            self.append(PackedScaleEnsemble(members, k, in_features))
        size = in_features
        for _ in range(blocks):
            if arch == "tabm":
                self.append(PackedBatchEnsembleLinear(members, k, size, width))
            elif arch == "mini":
                self.append(PackedSharedLinear(members, size, width))
            else:
                self.append(PackedLinearEnsemble(members, k, size, width))
            self.append(activation)
            if dropout > 0:
                self.append(TabMDropout(dropout))
            size = width
        self.append(PackedLinearEnsemble(members, k, width, outputs))
        if output_layer is not None:
            self.append(PackedRankBiasesEnsemble(members, k, output_layer.bias.numel()))
        self.reset_parameters()

    # ------------------------------------------------------------------ init

    def reset_parameters(self, generators: Sequence[torch.Generator | None] | None = None) -> None:
        """Each fit's TabM init (module docstring) from ``generators[m]`` (None: torch's
        global RNG), fit by fit, each in the package's order of draws."""
        if generators is None:
            generators = [None] * self.members
        if len(generators) != self.members:
            raise ValueError(f"{self.members} fits but {len(generators)} generators")
        for m, generator in enumerate(generators):
            self.init_member(m, generator)

    def init_member(self, m: int, generator: torch.Generator | None) -> None:
        """Fit ``m``'s init from ``generator``, in the order the package builds its layers."""
        config = self._config
        first = True
        scale = None
        for module in self:
            if isinstance(module, PackedScaleEnsemble):
                scale = module  # the package builds mini's scaling after its blocks
            elif isinstance(module, PackedBatchEnsembleLinear):
                r_init = config["scaling_init"] if first else None
                module.init_member(m, generator, r_init, config["chunks"] if first else None)
                first = False
            elif isinstance(module, PackedSharedLinear):
                module.init_member(m, generator)
            elif isinstance(module, PackedLinearEnsemble):
                if scale is not None and module is self.head:
                    scale.init_member(m, generator, config["scaling_init"], config["chunks"])
                module.init_member(m, generator)
            elif isinstance(module, PackedRankBiasesEnsemble):
                with torch.no_grad():
                    start = torch.linspace(1.0, -1.0, module.bias.shape[-1])
                    module.bias[m].copy_(start.expand_as(module.bias[m]))

    @property
    def head(self) -> PackedLinearEnsemble:
        """The k output heads."""
        return next(m for m in reversed(self) if isinstance(m, PackedLinearEnsemble))

    # ------------------------------------------------------------------ fits

    def with_members(self, members: int) -> PackedTabM:
        """The same structure for ``members`` fits (init from torch's global RNG)."""
        return PackedTabM(members, **self._config)

    def linears(self) -> list[nn.Module]:
        """The linear layers (the blocks', then the heads), in forward order."""
        kinds = PackedBatchEnsembleLinear | PackedSharedLinear | PackedLinearEnsemble
        return [m for m in self if isinstance(m, kinds)]

    def parameter_count(self) -> int:
        """Trainable values of all fits (M x :func:`tabm_parameter_count`)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ noise

    def noisy_layers(self) -> list[TabMDropout]:
        return [m for m in self if isinstance(m, TabMDropout)]

    def noise_widths(self) -> list[int]:
        """Each dropout's noise width per row: ``k * width``."""
        return [self.k * self._config["width"] for _ in self.noisy_layers()]

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, mask: Tensor | None = None, *, direct: bool = False) -> Tensor:
        """``[M, B, in]`` or ``[B, in]`` -> ``[M, B, k, outputs]``; ``mask`` is ignored (no
        batch norm); ``direct`` skips torch's per-call dispatch as PackedMLP's does."""
        del mask
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        x = x.unsqueeze(1)  # [M, 1, B, in]: the same rows for every submodel
        for module in self._modules.values():
            x = module.forward(x) if direct else module(x)
        return x.transpose(1, 2)


def combine_submodels(head: Head, outputs: Tensor) -> Tensor:
    """The ensemble of each fit's k submodels: ``[M, B, k, o] -> [M, B, o]``, combined in the
    head's space (``head.combine``: the mean of probabilities for the categorical head)."""
    return head.combine(outputs.movedim(2, 0))


def tabm_parameter_count(
    k: int,
    in_features: int,
    width: int,
    blocks: int,
    outputs: int,
    arch: Arch = "tabm",
    rank_biases: int = 0,
) -> int:
    """Trainable values of one fit, from its sizes alone (nothing built)."""
    sizes = [in_features] + [width] * blocks
    total = 0
    for a, b in zip(sizes, sizes[1:], strict=False):
        if arch == "tabm":
            total += a * b + k * (a + 2 * b)
        elif arch == "mini":
            total += a * b + b
        else:
            total += k * (a * b + b)
    if arch == "mini":
        total += k * in_features
    return total + k * (width * outputs + outputs) + k * rank_biases
