"""Numeric feature embeddings for packed fits: piecewise-linear (PLE) and periodic.

The published forms are those of ``rtdl_num_embeddings`` (Gorishniy et al., "On Embeddings for
Numerical Features in Tabular Deep Learning"; the PLE ``version="B"`` and the periodic ``lite``
variant come from the TabM and TabR papers). Its classes hold one model's state, and a PLE's
bins (the data-dependent part) differ from fit to fit and from feature to feature; neither it
nor ``tabm`` (whose embeddings are shared by all its members) has a per-fit form. So the packed
forms are written here: every parameter and buffer has the fit index as dim 0, activations are
``[M, B, F]``, and fit ``m`` computes what the package's module computes with the same bins and
weights (tests hold them to 1e-6 against the package, and to the package's own initialisation
under ``torch.manual_seed``).

Bins are fitted per fit on that fit's training rows only (:func:`fit_bins`, called per fit
by :func:`pricenet.run.fits.fit_bins`), with the package's ``compute_bins`` (quantiles, or a
decision tree's thresholds). Documented fallbacks, never errors: a column with fewer
distinct training values than ``n_bins`` gets fewer bins (repeated quantiles merge: a binary
column gets one or two, as the package computes them); a column constant on a fit's
training rows gets one bin ``[v - 1, v + 1]`` (its embedding is then linear in the input);
``n_bins`` is lowered to the training rows minus one. A table with no
numeric feature is a :class:`NoNumericFeatures` error (one ``error:`` line, exit 2).

The bins live in the state dict (buffers ``edges`` ``[M, F, max_bins + 1]``, padded by
repeating each feature's last edge, and ``n_bins`` ``[M, F]``), so a checkpoint carries them;
:meth:`check_state` refuses a crafted state (shapes, dtypes, non-finite values, counts out of
range, edges that do not increase, padding that is not the last edge repeated) with one line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pricenet.errors import ConfigError, DataError
from pricenet.nn.spec import SpecError

MAX_BINS = 1024
METHODS = ("quantile", "tree")
VERSIONS = ("A", "B")
# the paper's tree settings: leaves of at least 64 rows, splits that reduce the impurity
DEFAULT_TREE_KWARGS: dict[str, Any] = {"min_samples_leaf": 64, "min_impurity_decrease": 1e-4}


class NoNumericFeatures(ConfigError):
    """A numeric embedding asked for on a table that has no numeric feature."""


def _no_numeric(embedding: str) -> NoNumericFeatures:
    return NoNumericFeatures(
        f"embedding={embedding} embeds numeric features, but the table has none "
        "(use embedding=none)"
    )


# --------------------------------------------------------------------------- bins


def fit_bins(
    x: Tensor,
    n_bins: int,
    method: Literal["quantile", "tree"] = "quantile",
    y: Tensor | None = None,
    *,
    regression: bool = False,
    tree_kwargs: Mapping[str, Any] | None = None,
) -> list[Tensor]:
    """Bin edges (float32, strictly increasing, 2..n_bins+1 each) per column of one fit's
    training rows ``x`` ``[n, d]``, by ``rtdl_num_embeddings.compute_bins``.

    ``method="tree"`` needs the training labels ``y`` ``[n]`` and the task type
    (``regression=False``: class indices, a ``DecisionTreeClassifier``); ``tree_kwargs``
    default to :data:`DEFAULT_TREE_KWARGS` (``random_state`` 0 unless given). See the module
    docstring for the fallbacks on columns with few distinct values.
    """
    from rtdl_num_embeddings import compute_bins

    if method not in METHODS:
        raise ConfigError(f"embedding.bins={method!r} is invalid: one of {', '.join(METHODS)}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= MAX_BINS:
        raise ConfigError(f"embedding.n_bins={n_bins!r} is invalid: an integer in 2..{MAX_BINS}")
    if x.dim() != 2:
        raise ValueError(f"x must be [rows, features], got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    rows, width = x.shape
    if width == 0:
        raise _no_numeric("piecewise_linear")
    if rows < 2:
        raise DataError(f"piecewise-linear bins need at least 2 training rows; a fit has {rows}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("piecewise-linear bins: the training rows hold NaN or infinite values")
    if method == "tree":
        if y is None or y.shape != (rows,):
            raise ValueError(f"tree bins need one label per training row ({rows})")
        kwargs = dict(DEFAULT_TREE_KWARGS if tree_kwargs is None else tree_kwargs)
        kwargs.setdefault("random_state", 0)

    constant = (x == x[0]).all(0)
    varying = [j for j in range(width) if not constant[j]]
    bins: list[Tensor | None] = [None] * width
    count = min(n_bins, rows - 1)
    if varying and count < 2:  # two rows: one bin from the smaller value to the larger
        for j in varying:
            bins[j] = torch.stack([x[:, j].min(), x[:, j].max()])
    elif varying:
        columns = x[:, varying]
        with warnings.catch_warnings():  # "just two bin edges": the documented fallback
            warnings.simplefilter("ignore")
            if method == "quantile":
                fitted = compute_bins(columns, count)
            else:
                labels = y.detach().cpu()
                labels = labels.float() if regression else labels.long()
                fitted = compute_bins(
                    columns, count, tree_kwargs=kwargs, y=labels, regression=regression
                )
        for j, edges in zip(varying, fitted, strict=True):
            bins[j] = edges
    for j in range(width):
        if bins[j] is None:
            bins[j] = _single_bin(x[0, j])
    return [_clean(edges) for edges in bins]


def _single_bin(value: Tensor) -> Tensor:
    """The fallback bin of a constant column: ``[v - 1, v + 1]``."""
    return torch.stack([value - 1.0, value + 1.0]).to(torch.float32)


def _clean(edges: Tensor) -> Tensor:
    """Edges as float32, strictly increasing (a tree's float64 thresholds may merge)."""
    edges = edges.detach().to("cpu", torch.float32).unique()
    return edges if len(edges) >= 2 else _single_bin(edges[0])


def check_numeric(numeric: Sequence[int], embedding: str) -> None:
    """Refuse (:class:`NoNumericFeatures`) an embedding with no numeric input to embed."""
    if len(numeric) == 0:
        raise _no_numeric(embedding)


# --------------------------------------------------------------------------- state checks


def _check_like(module: nn.Module, state: Mapping[str, Any], prefix: str, key: str) -> None:
    """``state``'s entries under ``prefix`` have exactly ``module``'s keys, shapes, dtypes,
    and finite values (a meta ``module`` works: only its shapes are read)."""
    reference = module.state_dict()
    given = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(set(reference) - set(given))
    unknown = sorted(set(given) - set(reference))
    if missing:
        raise SpecError(f"{key}: missing {', '.join(missing[:3])}")
    if unknown:
        raise SpecError(f"{key}: unexpected {', '.join(unknown[:3])}")
    for name, expected in reference.items():
        value = given[name]
        if not isinstance(value, Tensor) or value.is_meta or value.layout != torch.strided:
            raise SpecError(f"{key}.{name}: not a dense tensor with values")
        if value.shape != expected.shape:
            raise SpecError(
                f"{key}.{name}: shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
            )
        if value.dtype != expected.dtype:
            raise SpecError(f"{key}.{name}: dtype {value.dtype}, expected {expected.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise SpecError(f"{key}.{name}: holds NaN or infinite values")


def check_edges(edges: Tensor, n_bins: Tensor, key: str = "embedding") -> None:
    """Refuse (:class:`SpecError`, one line) padded bins that a forward pass cannot use:
    counts outside ``1..max_bins``, non-finite edges, edges that do not strictly increase
    (or so close that a bin's slope overflows), padding that does not repeat the last edge."""
    max_bins = edges.shape[-1] - 1
    if not bool(torch.isfinite(edges).all()):
        raise SpecError(f"{key}.edges: holds NaN or infinite values")
    bad = (n_bins < 1) | (n_bins > max_bins)
    if bool(bad.any()):
        m, f = (int(i) for i in bad.nonzero()[0])
        raise SpecError(f"{key}.n_bins[{m}, {f}]: {int(n_bins[m, f])} is not in 1..{max_bins}")
    steps = edges.diff(dim=-1)
    real = torch.arange(max_bins, device=edges.device) < n_bins[..., None]
    with torch.no_grad():
        slope_ok = torch.isfinite(1.0 / steps) & torch.isfinite(edges[..., :-1] / steps)
    problems = (
        (real & ~(steps > 0), "bin edges do not strictly increase"),
        (real & ~slope_ok, "bin edges are too close (a bin's slope overflows)"),
        (~real & (steps != 0), "padding after the last edge does not repeat it"),
    )
    for mask, problem in problems:
        if bool(mask.any()):
            m, f, _ = (int(i) for i in mask.nonzero()[0])
            raise SpecError(f"{key}.edges[{m}, {f}]: {problem}")


def _select(state: Mapping[str, Tensor], m: int) -> dict[str, Tensor]:
    """Fit ``m``'s slice of a packed state dict (as ``nn.packed.select_members``)."""
    return {key: value[[m]].clone() for key, value in state.items()}


# --------------------------------------------------------------------------- piecewise linear


class PackedPiecewiseLinearEmbeddings(nn.Module):
    """``rtdl_num_embeddings.PiecewiseLinearEmbeddings`` for ``members`` fits, each with its
    own bins: ``[M, B, F] -> [M, B, F * d_embedding]``.

    ``bins[m][f]``: the edges of feature ``f`` for fit ``m`` (:func:`fit_bins`); counts may
    differ. Each feature's encoding has ``max_bins`` components, laid out as the package lays
    one fit's out: the first ``n - 1`` bins at the front, the last bin always in the last
    component, zeros between. ``max_bins`` (at least the largest count) pads further, so that
    a structure from a checkpoint's spec fits its state.

    State: buffers ``edges`` ``[M, F, max_bins + 1]`` (float32) and ``n_bins`` ``[M, F]``
    (int64); parameters ``weight`` ``[M, F, max_bins, d]`` and, for ``version="A"``, ``bias``
    ``[M, F, d]``; for ``"B"``, ``linear0_weight`` and ``linear0_bias`` ``[M, F, d]`` (the
    package's ``linear0``, a linear embedding added to the PLE part, whose ``weight`` starts
    at zero). ``activation``: ReLU on the PLE part.
    """

    def __init__(
        self,
        members: int,
        bins: Sequence[Sequence[Tensor]],
        d_embedding: int,
        activation: bool,
        version: Literal["A", "B"],
        *,
        max_bins: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        super().__init__()
        if len(bins) != members or members < 1:
            raise ValueError(f"{members} members but bins for {len(bins)} fits")
        n_features = len(bins[0])
        if n_features == 0:
            raise _no_numeric("piecewise_linear")
        if any(len(fit) != n_features for fit in bins):
            raise ValueError("every fit needs bins for the same features")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if d_embedding < 1:
            raise ValueError(f"d_embedding must be positive, got {d_embedding}")
        counts = [[len(edges) - 1 for edges in fit] for fit in bins]
        widest = max(max(fit) for fit in counts)
        max_bins = widest if max_bins is None else max_bins
        if not widest <= max_bins <= MAX_BINS or min(min(fit) for fit in counts) < 1:
            raise ValueError(f"bins need 1..{max_bins} bins per feature (max_bins {MAX_BINS})")
        self.members, self.n_features, self.max_bins = members, n_features, max_bins
        self.d_embedding, self.activation, self.version = d_embedding, bool(activation), version
        edges = torch.stack(
            [
                torch.stack([torch.cat([e, e[-1:].expand(max_bins + 1 - len(e))]) for e in fit])
                for fit in bins
            ]
        ).to(torch.float32)
        self.register_buffer("edges", edges)
        self.register_buffer("n_bins", torch.tensor(counts, dtype=torch.long))
        self.weight = nn.Parameter(torch.zeros(members, n_features, max_bins, d_embedding))
        shape = (members, n_features, d_embedding)
        if version == "A":
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.linear0_weight = nn.Parameter(torch.zeros(shape))
            self.linear0_bias = nn.Parameter(torch.zeros(shape))
        if not self.edges.is_meta:
            check_edges(self.edges, self.n_bins, "bins")
            self.init_members(generators)

    @classmethod
    def structure(
        cls,
        members: int,
        n_features: int,
        max_bins: int,
        d_embedding: int,
        activation: bool,
        version: Literal["A", "B"],
    ) -> PackedPiecewiseLinearEmbeddings:
        """The structure a checkpoint's state is loaded into (placeholder bins, ``max_bins``
        of them per feature); under ``torch.device("meta")`` nothing is allocated."""
        if not 1 <= max_bins <= MAX_BINS:
            raise ValueError(f"max_bins must be in 1..{MAX_BINS}, got {max_bins}")
        edges = torch.linspace(-1.0, 1.0, max_bins + 1)
        bins = [[edges] * n_features for _ in range(members)]
        return cls(members, bins, d_embedding, activation, version, max_bins=max_bins)

    @property
    def out_features(self) -> int:
        return self.n_features * self.d_embedding

    def with_members(self, members: int) -> PackedPiecewiseLinearEmbeddings:
        """The same structure for ``members`` fits (placeholder bins)."""
        return self.structure(
            members,
            self.n_features,
            self.max_bins,
            self.d_embedding,
            self.activation,
            self.version,
        ).to(self.edges.device)

    def member(self, m: int) -> PackedPiecewiseLinearEmbeddings:
        """Fit ``m`` alone (bins too), as an M=1 module: its state is
        ``select_members(self.state_dict(), [m])``."""
        single = self.with_members(1)
        single.load_state_dict(_select(self.state_dict(), m))
        return single

    # ---------------------------------------------------------------- init

    def fit_max_bins(self, m: int) -> int:
        """The package's ``max_n_bins`` of fit ``m``: its own largest count."""
        return int(self.n_bins[m].max())

    @torch.no_grad()
    def init_member(self, m: int, generator: torch.Generator | None = None) -> None:
        """Initialise fit ``m`` as the package initialises a ``PiecewiseLinearEmbeddings`` of
        its bins (same draws, in the same order, from ``generator``; None: torch's global
        RNG); padding components' weights are zero."""
        k, d, f = self.fit_max_bins(m), self.d_embedding, self.n_features
        if self.version == "B":  # linear0: LinearEmbeddings(F, d)
            bound = d**-0.5
            self.linear0_weight[m].uniform_(-bound, bound, generator=generator)
            self.linear0_bias[m].uniform_(-bound, bound, generator=generator)
        bound = k**-0.5  # _NLinear(F, k, d): weight, then bias (B: drawn, then zeroed)
        weight = torch.empty(f, k, d).uniform_(-bound, bound, generator=generator)
        if self.version == "A":
            self.bias[m].uniform_(-bound, bound, generator=generator)
        else:
            weight.zero_()
        self.weight[m].zero_()
        self.weight[m, :, : k - 1] = weight[:, : k - 1]
        self.weight[m, :, -1] = weight[:, -1]

    def init_members(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """Every fit from its own generator (``generators[m]``), fit ``m`` independent of M."""
        if generators is not None and len(generators) != self.members:
            raise ValueError(f"{self.members} members but {len(generators)} generators")
        for m in range(self.members):
            self.init_member(m, None if generators is None else generators[m])

    def as_package_weight(self, m: int) -> Tensor:
        """Fit ``m``'s ``weight`` in the package's layout ``[F, k_m, d]`` (its own max count)."""
        k = self.fit_max_bins(m)
        return torch.cat([self.weight[m, :, : k - 1], self.weight[m, :, -1:]], dim=1)

    # ---------------------------------------------------------------- state

    def check_state(
        self, state: Mapping[str, Any], key: str = "embedding", prefix: str = ""
    ) -> None:
        """Refuse a state this structure cannot hold (see :func:`check_edges`)."""
        _check_like(self, state, prefix, key)
        check_edges(state[prefix + "edges"], state[prefix + "n_bins"], key)

    # ---------------------------------------------------------------- forward

    def _encoding(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per fit, feature and component: slope, offset and clamp bounds ``[M, F, K]``."""
        k_total = self.max_bins
        k = torch.arange(k_total, device=self.edges.device)
        last = (self.n_bins - 1).unsqueeze(-1)  # the last bin's index
        is_last = k == k_total - 1
        valid = (k < last) | is_last
        index = torch.where(is_last, last, torch.where(valid, k, 0))
        left = self.edges.gather(-1, index)
        width = self.edges.gather(-1, index + 1) - left
        width = torch.where(valid, width, torch.ones_like(width))
        slope = torch.where(valid, 1.0 / width, torch.zeros_like(width))
        offset = torch.where(valid, -left / width, torch.zeros_like(width))
        inf = torch.full_like(width, math.inf)
        # the first bin extrapolates left, the last right (a single bin both ways), the rest
        # are clamped to [0, 1]; as the package, where one fit's first and last coincide
        # only when every feature has one bin (no clamp at all)
        lower = torch.where(is_last & (last == 0), -inf, torch.zeros_like(width))
        lower = torch.where((k == 0) & ~is_last, -inf, lower)
        upper = torch.where(is_last, inf, torch.ones_like(width))
        return slope, offset, lower, upper

    def forward(self, x: Tensor) -> Tensor:
        # computed as [M, F, B, .]: one batched matmul per (fit, feature), no copy of the
        # (largest) encoded tensor; only the output is laid out as [M, B, F * d] at the end
        slope, offset, lower, upper = self._encoding()
        # contiguous: the [M, F, B, K] results then are too (else they follow x's strides)
        x = x.transpose(1, 2).contiguous().unsqueeze(-1)  # [M, F, B, 1]
        encoded = torch.addcmul(offset.unsqueeze(2), slope.unsqueeze(2), x)
        encoded = encoded.clamp_(
            lower.unsqueeze(2), upper.unsqueeze(2)
        )  # (addcmul keeps no output)
        members, features, rows, bins = encoded.shape
        out = torch.bmm(
            encoded.reshape(-1, rows, bins), self.weight.reshape(-1, bins, self.d_embedding)
        )
        out = out.view(members, features, rows, -1)  # [M, F, B, d]
        if self.version == "A":
            out = out + self.bias.unsqueeze(2)
        if self.activation:
            out = torch.relu(out)
        if self.version == "B":
            linear = torch.addcmul(
                self.linear0_bias.unsqueeze(2), self.linear0_weight.unsqueeze(2), x
            )
            out = linear + out
        return out.transpose(1, 2).flatten(-2)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, features={self.n_features}, max_bins={self.max_bins}, "
            f"d_embedding={self.d_embedding}, activation={self.activation}, "
            f"version={self.version!r}"
        )


# --------------------------------------------------------------------------- periodic


class PackedPeriodicEmbeddings(nn.Module):
    """``rtdl_num_embeddings.PeriodicEmbeddings`` for ``members`` fits:
    ``[M, B, F] -> [M, B, F * d_embedding]``.

    ``x -> [cos(2 pi w x), sin(2 pi w x)]`` with ``n_frequencies`` learned frequencies ``w``
    per feature (initialised N(0, ``frequency_init_scale``) truncated at 3 sigma), then a
    linear layer per feature, or (``lite``) one shared by the features of a fit, then ReLU
    (``activation``; lite requires it, as the package).

    State (parameters): ``frequencies`` ``[M, F, k]``; ``weight`` ``[M, F, 2k, d]`` and
    ``bias`` ``[M, F, d]``, or with ``lite`` ``weight`` ``[M, 2k, d]`` and ``bias``
    ``[M, 1, d]`` (an ``nn.Linear`` stored transposed, as ``PackedLinear``).
    """

    def __init__(
        self,
        members: int,
        n_features: int,
        n_frequencies: int = 48,
        frequency_init_scale: float = 0.01,
        d_embedding: int = 24,
        lite: bool = False,
        activation: bool = True,
        *,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        super().__init__()
        if n_features < 1:
            raise _no_numeric("periodic")
        if members < 1 or n_frequencies < 1 or d_embedding < 1:
            raise ValueError("members, n_frequencies and d_embedding must be positive")
        if not (math.isfinite(frequency_init_scale) and frequency_init_scale > 0):
            raise ValueError(f"frequency_init_scale must be > 0, got {frequency_init_scale}")
        if lite and not activation:
            raise ValueError("lite=True is allowed only when activation=True")
        self.members, self.n_features, self.n_frequencies = members, n_features, n_frequencies
        self.frequency_init_scale, self.d_embedding = float(frequency_init_scale), d_embedding
        self.lite, self.activation = bool(lite), bool(activation)
        self.frequencies = nn.Parameter(torch.zeros(members, n_features, n_frequencies))
        width = 2 * n_frequencies
        if lite:
            self.weight = nn.Parameter(torch.zeros(members, width, d_embedding))
            self.bias = nn.Parameter(torch.zeros(members, 1, d_embedding))
        else:
            self.weight = nn.Parameter(torch.zeros(members, n_features, width, d_embedding))
            self.bias = nn.Parameter(torch.zeros(members, n_features, d_embedding))
        if not self.weight.is_meta:
            self.init_members(generators)

    @property
    def out_features(self) -> int:
        return self.n_features * self.d_embedding

    def with_members(self, members: int) -> PackedPeriodicEmbeddings:
        return PackedPeriodicEmbeddings(
            members,
            self.n_features,
            self.n_frequencies,
            self.frequency_init_scale,
            self.d_embedding,
            self.lite,
            self.activation,
        ).to(self.weight.device)

    def member(self, m: int) -> PackedPeriodicEmbeddings:
        """Fit ``m`` alone, as an M=1 module (``select_members`` of the state)."""
        single = self.with_members(1)
        single.load_state_dict(_select(self.state_dict(), m))
        return single

    @torch.no_grad()
    def init_member(self, m: int, generator: torch.Generator | None = None) -> None:
        """Initialise fit ``m`` as the package initialises a ``PeriodicEmbeddings`` (same
        draws, same order, from ``generator``; None: torch's global RNG)."""
        sigma = self.frequency_init_scale
        frequencies = torch.empty(self.n_features, self.n_frequencies)
        nn.init.trunc_normal_(frequencies, 0.0, sigma, -3 * sigma, 3 * sigma, generator=generator)
        self.frequencies[m] = frequencies
        width = 2 * self.n_frequencies
        if self.lite:  # nn.Linear(2k, d)
            weight = torch.empty(self.d_embedding, width)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            self.weight[m] = weight.T
            bound = 1 / math.sqrt(width)
            self.bias[m].uniform_(-bound, bound, generator=generator)
        else:  # _NLinear(F, 2k, d)
            bound = width**-0.5
            self.weight[m].uniform_(-bound, bound, generator=generator)
            self.bias[m].uniform_(-bound, bound, generator=generator)

    def init_members(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """Every fit from its own generator (``generators[m]``), fit ``m`` independent of M."""
        if generators is not None and len(generators) != self.members:
            raise ValueError(f"{self.members} members but {len(generators)} generators")
        for m in range(self.members):
            self.init_member(m, None if generators is None else generators[m])

    def check_state(
        self, state: Mapping[str, Any], key: str = "embedding", prefix: str = ""
    ) -> None:
        """Refuse a state this structure cannot hold: keys, shapes, dtypes, finiteness."""
        _check_like(self, state, prefix, key)

    def forward(self, x: Tensor) -> Tensor:
        # computed as [M, F, B, .] (see PackedPiecewiseLinearEmbeddings.forward)
        # contiguous: the [M, F, B, K] results then are too (else they follow x's strides)
        x = x.transpose(1, 2).contiguous().unsqueeze(-1)  # [M, F, B, 1]
        z = (2 * math.pi * self.frequencies).unsqueeze(2) * x
        z = torch.cat([torch.cos(z), torch.sin(z)], -1)  # [M, F, B, 2k]
        if self.lite:  # one linear layer for every feature of a fit
            members, features, rows, width = z.shape
            out = torch.baddbmm(self.bias, z.reshape(members, -1, width), self.weight)
            out = out.view(members, features, rows, -1)
        else:
            out = torch.matmul(z, self.weight) + self.bias.unsqueeze(2)
        if self.activation:
            out = torch.relu(out)
        return out.transpose(1, 2).flatten(-2)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, features={self.n_features}, "
            f"n_frequencies={self.n_frequencies}, sigma={self.frequency_init_scale}, "
            f"d_embedding={self.d_embedding}, lite={self.lite}, activation={self.activation}"
        )


# --------------------------------------------------------------------------- the input layer

Embedding = PackedPiecewiseLinearEmbeddings | PackedPeriodicEmbeddings


class PackedNumericEmbedding(nn.Module):
    """The network's first layer with an embedding: ``[M, B, width] -> [M, B, out_features]``
    (a ``[B, width]`` input goes to every fit).

    The inputs at the positions ``numeric`` (the preprocessed numeric columns) are embedded
    by ``inner`` (``len(numeric)`` features); the other inputs (one-hot, was-missing) pass
    through unchanged. Output: the embeddings, feature by feature in ``numeric``'s order
    (``d_embedding`` each), then the other inputs in their input order, so
    ``out_features = len(numeric) * d_embedding + width - len(numeric)``.

    State: ``inner.`` + the inner embedding's keys (the positions come from the spec).
    """

    def __init__(self, members: int, numeric: Sequence[int], width: int, inner: Embedding) -> None:
        super().__init__()
        numeric = [int(i) for i in numeric]
        check_numeric(numeric, _kind(inner))
        if len(set(numeric)) != len(numeric) or not all(0 <= i < width for i in numeric):
            raise ValueError(f"numeric positions must be distinct and in 0..{width - 1}")
        if inner.members != members or inner.n_features != len(numeric):
            raise ValueError(
                f"inner embeds {inner.n_features} features of {inner.members} fits; "
                f"expected {len(numeric)} of {members}"
            )
        self.members, self.width = members, width
        self.numeric = tuple(numeric)
        self.others = tuple(i for i in range(width) if i not in set(numeric))
        self.inner = inner
        self.register_buffer("numeric_index", torch.tensor(self.numeric), persistent=False)
        self.register_buffer("other_index", torch.tensor(self.others), persistent=False)

    @property
    def out_features(self) -> int:
        return self.inner.out_features + len(self.others)

    def with_members(self, members: int) -> PackedNumericEmbedding:
        """The same structure for ``members`` fits (the inner embedding's placeholders)."""
        inner = self.inner.with_members(members)
        return PackedNumericEmbedding(members, self.numeric, self.width, inner)

    def member(self, m: int) -> PackedNumericEmbedding:
        """Fit ``m`` alone, as an M=1 module (``select_members`` of the state)."""
        return PackedNumericEmbedding(1, self.numeric, self.width, self.inner.member(m))

    def init_members(self, generators: Sequence[torch.Generator] | None = None) -> None:
        self.inner.init_members(generators)

    def check_state(
        self, state: Mapping[str, Any], key: str = "embedding", prefix: str = ""
    ) -> None:
        """Refuse a state this structure cannot hold (the inner embedding's checks)."""
        own = [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "inner.")]
        if own:
            raise SpecError(f"{key}: unexpected {', '.join(k[len(prefix) :] for k in own[:3])}")
        self.inner.check_state(state, f"{key}.inner", prefix + "inner.")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        embedded = self.inner(x.index_select(-1, self.numeric_index))
        if not self.others:
            return embedded
        return torch.cat([embedded, x.index_select(-1, self.other_index)], dim=-1)

    def extra_repr(self) -> str:
        return f"members={self.members}, width={self.width}, numeric={len(self.numeric)}"


def _kind(inner: nn.Module) -> str:
    return "periodic" if isinstance(inner, PackedPeriodicEmbeddings) else "piecewise_linear"
