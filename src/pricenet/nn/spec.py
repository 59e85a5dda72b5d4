"""What a checkpoint may say about a network: a closed vocabulary, checked value by value.

A checkpoint is untrusted input (a colleague's file, a model zoo, an upload to the service).
So no string read from one ever chooses which code runs: a network is stored as a
:class:`NetworkSpec`, plain names and numbers, and rebuilt through the two closed mappings
below (:data:`ACTIVATIONS`, :data:`HEADS`) of the callables pricenet ships. Every value is
checked for its type and range before anything is built; nothing goes through Hydra's
``instantiate``.

At train time the user's own config (trusted: they wrote it) is instantiated as usual, and
:func:`network_spec` describes what it built in this vocabulary, refusing, before any
training, a module that a checkpoint could not describe.

Budget before allocation: a spec knows its size (:meth:`NetworkSpec.parameter_count`,
:meth:`NetworkSpec.activation_bytes`, members x widths x layers, no tensor built), so a
network over the budget is refused before anything is allocated, on both paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pricenet.errors import ConfigError, shown
from pricenet.nn.heads import CategoricalHead, CoralHead, Head, OrdinalHead, RegressionHead

ArgValue = float | int | str | bool
Check = Callable[[Any], bool]

# Bounds that keep a crafted file from asking for absurd allocations.
MAX_MEMBERS = 1024
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_CLASSES = 10_000
# The network budget every loaded network must fit (a fixed ceiling), computed from the spec
# before anything is built: its stored values (weights and buffers: 2**28 float32 = 1 GiB),
# and the activations of one forward pass over PREDICT_ROWS rows (4 GiB). Training checks
# the same ceilings (so what trains loads), then its own, lower, trainer.max_* limits.
MAX_PARAMETERS = 2**28
MAX_ACTIVATION_BYTES = 4 * 2**30
PREDICT_ROWS = 1024
BYTES_PER_VALUE = 4  # float32


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WIDTH


def _choice(*allowed: Any) -> Check:
    return lambda value: isinstance(value, type(allowed[0])) and value in allowed


@dataclass(frozen=True)
class ActivationKind:
    """A torch activation pricenet can rebuild, with the arguments it may take and their checks."""

    cls: type[nn.Module]
    args: dict[str, Check] = field(default_factory=dict)  # named as torch stores them


# name -> kind. Adding an activation that torch already has is one entry here and one YAML.
ACTIVATIONS: dict[str, ActivationKind] = {
    "identity": ActivationKind(nn.Identity),
    "relu": ActivationKind(nn.ReLU),
    "relu6": ActivationKind(nn.ReLU6),
    "leaky_relu": ActivationKind(nn.LeakyReLU, {"negative_slope": _finite}),
    "prelu": ActivationKind(nn.PReLU, {"num_parameters": _count, "init": _finite}),
    "rrelu": ActivationKind(nn.RReLU, {"lower": _finite, "upper": _finite}),
    "elu": ActivationKind(nn.ELU, {"alpha": _finite}),
    "celu": ActivationKind(nn.CELU, {"alpha": lambda v: _finite(v) and v != 0}),
    "selu": ActivationKind(nn.SELU),
    "gelu": ActivationKind(nn.GELU, {"approximate": _choice("none", "tanh")}),
    "silu": ActivationKind(nn.SiLU),
    "mish": ActivationKind(nn.Mish),
    "sigmoid": ActivationKind(nn.Sigmoid),
    "tanh": ActivationKind(nn.Tanh),
    "hardtanh": ActivationKind(nn.Hardtanh, {"min_val": _finite, "max_val": _finite}),
    "hardswish": ActivationKind(nn.Hardswish),
    "hardsigmoid": ActivationKind(nn.Hardsigmoid),
    "softplus": ActivationKind(nn.Softplus, {"beta": _positive, "threshold": _finite}),
    "softsign": ActivationKind(nn.Softsign),
    "tanhshrink": ActivationKind(nn.Tanhshrink),
    "logsigmoid": ActivationKind(nn.LogSigmoid),
    # over the features of each row, whatever the leading (member, batch) dimensions
    "softmax": ActivationKind(nn.Softmax, {"dim": _choice(-1)}),
}
_ACTIVATION_NAMES = {kind.cls: name for name, kind in ACTIVATIONS.items()}

HEADS: dict[str, type[Head]] = {
    "categorical": CategoricalHead,
    "ordinal": OrdinalHead,
    "coral": CoralHead,
    "regression": RegressionHead,
}
_HEAD_NAMES = {cls: name for name, cls in HEADS.items()}


class SpecError(ValueError):
    """A description that does not fit the vocabulary; the caller adds where it came from."""


@dataclass(frozen=True)
class ActivationSpec:
    """An activation by name, with its (checked) arguments."""

    name: str
    args: dict[str, ArgValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, node: Any, key: str) -> ActivationSpec:
        _keys(node, key, {"name", "args"})
        name, args = node["name"], node["args"]
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise SpecError(f"{key}.name: {shown(name)} is not an activation pricenet builds")
        if not isinstance(args, dict):
            raise SpecError(f"{key}.args: expected a mapping, got {type(args).__name__}")
        checks = ACTIVATIONS[name].args
        for arg, value in args.items():
            if arg not in checks:
                raise SpecError(f"{key}.args: {shown(arg)} is not an argument of {name}")
            if not checks[arg](value):
                raise SpecError(f"{key}.args.{arg}: {shown(value)} is out of range")
        if name == "rrelu" and not 0 <= args.get("lower", 0.125) <= args.get("upper", 1 / 3):
            raise SpecError(f"{key}.args: rrelu needs 0 <= lower <= upper")
        if name == "hardtanh" and not args.get("min_val", -1.0) < args.get("max_val", 1.0):
            raise SpecError(f"{key}.args: hardtanh needs min_val < max_val")
        return cls(name, dict(args))

    def check_width(self, width: int, key: str) -> None:
        """An activation with one learned value per unit must have its layer's width."""
        count = self.args.get("num_parameters", 1)
        if self.name == "prelu" and count not in (1, width):
            raise SpecError(
                f"{key}.args.num_parameters: {count} does not fit its layer of {width} units "
                "(1 or the layer's width)"
            )


ARCHS = ("mlp", "tabm", "mini", "packed")
TABM_REFUSED = frozenset(
    {"prelu", "rrelu"}
)  # learned or noisy: no TabM form (nn.tabm)  # mlp: pricenet's MLP; the others TabM's (nn.tabm)
MAX_SUBMODELS = 256
EMBEDDINGS = ("piecewise_linear", "periodic")
MAX_EMBEDDING = 1024  # bins, frequencies, embedding width
_EMBEDDING_KEYS = {
    "piecewise_linear": {"kind", "numeric", "d_embedding", "max_bins", "activation", "version"},
    "periodic": {
        "kind",
        "numeric",
        "d_embedding",
        "n_frequencies",
        "frequency_init_scale",
        "lite",
        "activation",
    },
}


@dataclass(frozen=True)
class EmbeddingSpec:
    """Numeric feature embeddings (:mod:`pricenet.nn.embeddings`) in plain values: the first
    ``numeric`` inputs (the preprocessed numeric columns) are embedded, ``d_embedding``
    values each; the others pass through."""

    kind: str
    numeric: int
    d_embedding: int
    max_bins: int = 0  # piecewise_linear: bins per feature (fewer where a column has fewer)
    version: str = "B"
    n_frequencies: int = 0  # periodic
    frequency_init_scale: float = 0.01
    lite: bool = False
    activation: bool = True

    def to_dict(self) -> dict[str, Any]:
        every = {
            "kind": self.kind,
            "numeric": self.numeric,
            "d_embedding": self.d_embedding,
            "max_bins": self.max_bins,
            "version": self.version,
            "n_frequencies": self.n_frequencies,
            "frequency_init_scale": self.frequency_init_scale,
            "lite": self.lite,
            "activation": self.activation,
        }
        return {k: v for k, v in every.items() if k in _EMBEDDING_KEYS[self.kind]}

    @classmethod
    def from_dict(cls, node: Any, key: str) -> EmbeddingSpec:
        if not isinstance(node, dict) or node.get("kind") not in EMBEDDINGS:
            kind = node.get("kind") if isinstance(node, dict) else node
            raise SpecError(f"{key}.kind: {shown(kind)} is not one of {', '.join(EMBEDDINGS)}")
        _keys(node, key, _EMBEDDING_KEYS[node["kind"]])
        for name in ("numeric", "d_embedding", "max_bins", "n_frequencies"):
            if name in node and not (_count(node[name]) and node[name] <= MAX_EMBEDDING):
                raise SpecError(f"{key}.{name}: {shown(node[name])} is not in 1..{MAX_EMBEDDING}")
        for name in ("activation", "lite"):
            if name in node and not isinstance(node[name], bool):
                raise SpecError(f"{key}.{name}: {shown(node[name])} is not true/false")
        if "version" in node and node["version"] not in ("A", "B"):
            raise SpecError(f"{key}.version: {shown(node['version'])} is not A or B")
        scale = node.get("frequency_init_scale", 0.01)
        if not (_finite(scale) and 0 < scale <= 100):
            raise SpecError(f"{key}.frequency_init_scale: {shown(scale)} is not in (0, 100]")
        if node.get("lite") and not node.get("activation"):
            raise SpecError(f"{key}.lite: needs activation: true")
        return cls(**node)

    @property
    def out_features(self) -> int:
        """Outputs for the embedded inputs (the others pass through)."""
        return self.numeric * self.d_embedding

    def parameter_count(self) -> int:
        """Stored values per fit (weights and the bins' buffers)."""
        f, d = self.numeric, self.d_embedding
        if self.kind == "piecewise_linear":
            extra = f * d if self.version == "A" else 2 * f * d
            return f * self.max_bins * d + extra + f * (self.max_bins + 2)
        k = self.n_frequencies
        linear = 2 * k * d + d if self.lite else f * (2 * k * d + d)
        return f * k + linear

    def activation_values(self) -> int:
        """The largest tensors one row holds on its way through (per fit)."""
        if self.kind == "piecewise_linear":
            return self.numeric * (self.max_bins + self.d_embedding)
        return self.numeric * (4 * self.n_frequencies + self.d_embedding)


MAX_CATEGORY_SIZE = 1_000_000  # codes per embedded categorical feature (the budget bounds all)


@dataclass(frozen=True)
class CategorySpec:
    """Learned embeddings of categorical features (:mod:`pricenet.nn.categories`): the last
    ``len(sizes)`` inputs are codes, feature ``j`` taking ``sizes[j]`` values, each looked up
    as ``d_embedding`` values."""

    sizes: tuple[int, ...]
    d_embedding: int

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "d_embedding": self.d_embedding}

    @classmethod
    def from_dict(cls, node: Any, key: str) -> CategorySpec:
        _keys(node, key, {"sizes", "d_embedding"})
        sizes = node["sizes"]
        if not isinstance(sizes, list | tuple) or not 1 <= len(sizes) <= MAX_WIDTH:
            raise SpecError(f"{key}.sizes: expected a list of 1..{MAX_WIDTH} sizes")
        for j, size in enumerate(sizes):
            if not (_count(size) and size <= MAX_CATEGORY_SIZE):
                raise SpecError(f"{key}.sizes[{j}]: {shown(size)} is not in 1..{MAX_CATEGORY_SIZE}")
        d = node["d_embedding"]
        if not (_count(d) and d <= MAX_EMBEDDING):
            raise SpecError(f"{key}.d_embedding: {shown(d)} is not in 1..{MAX_EMBEDDING}")
        return cls(tuple(sizes), d)

    @property
    def out_features(self) -> int:
        return len(self.sizes) * self.d_embedding

    def parameter_count(self) -> int:
        """Stored values per fit."""
        return sum(self.sizes) * self.d_embedding


@dataclass(frozen=True)
class NetworkSpec:
    """A (packed) network in plain values: enough to rebuild it and load its weights.

    ``arch`` ``mlp`` is pricenet's MLP (``hidden`` its sizes); ``tabm``, ``mini`` and
    ``packed`` are TabM's, ``k`` submodels per fit, ``len(hidden)`` blocks of ``hidden[0]``
    units. ``embedding``: numeric embeddings before the first layer, or None;
    ``categories``: learned embeddings of the last inputs (categorical codes), or None.
    """

    members: int
    in_features: int
    hidden: tuple[int, ...]
    activations: tuple[ActivationSpec, ...]
    dropout: float
    batch_norm: bool
    head: str
    num_classes: int
    arch: str = "mlp"
    k: int = 1
    embedding: EmbeddingSpec | None = None
    categories: CategorySpec | None = None

    @property
    def coded(self) -> int:
        """How many inputs (the last) are categorical codes."""
        return 0 if self.categories is None else len(self.categories.sizes)

    @property
    def backbone_inputs(self) -> int:
        """The first layer's inputs: the embedded numeric inputs, the others, then the
        embedded categorical codes."""
        width = self.in_features - self.coded
        if self.embedding is not None:
            width += self.embedding.out_features - self.embedding.numeric
        return width + (0 if self.categories is None else self.categories.out_features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "in_features": self.in_features,
            "hidden": list(self.hidden),
            "activations": [a.to_dict() for a in self.activations],
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "head": self.head,
            "num_classes": self.num_classes,
            "arch": self.arch,
            "k": self.k,
            "embedding": None if self.embedding is None else self.embedding.to_dict(),
            "categories": None if self.categories is None else self.categories.to_dict(),
        }

    @classmethod
    def from_dict(cls, node: Any, key: str = "network") -> NetworkSpec:
        """Check every key, type and range of an (untrusted) stored description (a
        checkpoint written before ``arch``, ``k``, ``embedding`` and ``categories`` existed
        holds an MLP without embeddings)."""
        _keys(node, key, set(cls.__dataclass_fields__), optional=OPTIONAL_KEYS)
        members = node["members"]
        if not isinstance(members, int) or isinstance(members, bool):
            raise SpecError(f"{key}.members: {shown(members)} is not an integer")
        if not 1 <= members <= MAX_MEMBERS:
            raise SpecError(f"{key}.members: {members} is not in 1..{MAX_MEMBERS}")
        if not _count(node["in_features"]):
            raise SpecError(f"{key}.in_features: {shown(node['in_features'])} is out of range")
        hidden = node["hidden"]
        if not isinstance(hidden, list | tuple) or len(hidden) > MAX_LAYERS:
            raise SpecError(f"{key}.hidden: expected a list of at most {MAX_LAYERS} sizes")
        for i, size in enumerate(hidden):
            if not _count(size):
                raise SpecError(f"{key}.hidden[{i}]: {shown(size)} is not a layer size")
        activations = node["activations"]
        if not isinstance(activations, list | tuple) or len(activations) != len(hidden):
            raise SpecError(f"{key}.activations: expected one per hidden layer ({len(hidden)})")
        dropout = node["dropout"]
        if not _finite(dropout) or not 0 <= dropout < 1:
            raise SpecError(f"{key}.dropout: {shown(dropout)} is not in [0, 1)")
        if not isinstance(node["batch_norm"], bool):
            raise SpecError(f"{key}.batch_norm: {shown(node['batch_norm'])} is not true/false")
        head = node["head"]
        if not isinstance(head, str) or head not in HEADS:
            raise SpecError(f"{key}.head: {shown(head)} is not one of {', '.join(HEADS)}")
        classes = node["num_classes"]
        if not isinstance(classes, int) or isinstance(classes, bool):
            raise SpecError(f"{key}.num_classes: {shown(classes)} is not an integer")
        if not 2 <= classes <= MAX_CLASSES:
            raise SpecError(f"{key}.num_classes: {classes} is not in 2..{MAX_CLASSES}")
        arch, k = node.get("arch", "mlp"), node.get("k", 1)
        if arch not in ARCHS:
            raise SpecError(f"{key}.arch: {shown(arch)} is not one of {', '.join(ARCHS)}")
        if not (_count(k) and k <= MAX_SUBMODELS) or (arch == "mlp" and k != 1):
            raise SpecError(f"{key}.k: {shown(k)} is not in 1..{MAX_SUBMODELS} (1 for mlp)")
        if arch != "mlp" and (not hidden or len(set(hidden)) != 1 or node["batch_norm"]):
            raise SpecError(f"{key}.hidden: a TabM has blocks of one width and no batch norm")
        embedding = node.get("embedding")
        if embedding is not None:
            embedding = EmbeddingSpec.from_dict(embedding, f"{key}.embedding")
        categories = node.get("categories")
        if categories is not None:
            categories = CategorySpec.from_dict(categories, f"{key}.categories")
            if len(categories.sizes) > node["in_features"]:
                raise SpecError(f"{key}.categories.sizes: more than the network's inputs")
        coded = 0 if categories is None else len(categories.sizes)
        if embedding is not None and embedding.numeric > node["in_features"] - coded:
            raise SpecError(f"{key}.embedding.numeric: more than the network's numeric inputs")
        spec = cls(
            categories=categories,
            arch=arch,
            k=k,
            embedding=embedding,
            members=members,
            in_features=node["in_features"],
            hidden=tuple(hidden),
            activations=tuple(
                ActivationSpec.from_dict(a, f"{key}.activations[{i}]")
                for i, a in enumerate(activations)
            ),
            dropout=float(dropout),
            batch_norm=node["batch_norm"],
            head=head,
            num_classes=classes,
        )
        for i, (activation, width) in enumerate(zip(spec.activations, hidden, strict=True)):
            activation.check_width(width, f"{key}.activations[{i}]")
        first = spec.activations[0] if spec.activations else None
        if arch != "mlp" and (
            first.name in TABM_REFUSED or any(a != first for a in spec.activations)
        ):
            raise SpecError(f"{key}.activations: a TabM has one stateless, noiseless activation")
        spec.check_budget(MAX_PARAMETERS, MAX_ACTIVATION_BYTES, PREDICT_ROWS, key)
        return spec

    # ------------------------------------------------------------------ budget

    @property
    def outputs(self) -> int:
        """The backbone's outputs (the head's, before its extra output layer)."""
        return HEADS[self.head](num_classes=self.num_classes).backbone_outputs

    def parameter_count(self) -> int:
        """The values the built network stores (weights and buffers), from the spec alone."""
        per_member = 0 if self.embedding is None else self.embedding.parameter_count()
        if self.categories is not None:
            per_member += self.categories.parameter_count()
        if self.arch != "mlp":
            from pricenet.nn.tabm import tabm_parameter_count

            rank = self.num_classes - 1 if self.head == "coral" else 0
            per_member += tabm_parameter_count(
                self.k,
                self.backbone_inputs,
                self.hidden[0],
                len(self.hidden),
                self.outputs,
                self.arch,
                rank,  # fmt: skip
            )
            return self.members * per_member
        widths = (self.backbone_inputs, *self.hidden, self.outputs)
        per_member += sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
        if self.batch_norm:  # weight, bias, running mean and variance; a batch counter
            per_member += sum(4 * size + 1 for size in self.hidden)
        for activation, size in zip(self.activations, self.hidden, strict=True):
            if activation.name == "prelu":
                per_member += min(activation.args.get("num_parameters", 1), size)
        if self.head == "coral":
            per_member += self.num_classes - 1
        return self.members * per_member

    def activation_bytes(self, rows: int) -> int:
        """The tensors one forward pass over ``rows`` rows holds, from the spec alone: the
        input, each hidden layer's linear, batch-norm, activation and dropout outputs, and
        the outputs, for every member (float32)."""
        per_layer = 2 + int(self.batch_norm) + int(self.dropout > 0)
        embedded = self.embedding is not None or self.categories is not None
        inputs = self.in_features + (self.backbone_inputs if embedded else 0)
        if self.embedding is not None:
            inputs += self.embedding.activation_values()
        if self.categories is not None:
            inputs += self.categories.out_features
        values = inputs + self.k * (per_layer * sum(self.hidden) + 2 * self.num_classes)
        return BYTES_PER_VALUE * rows * self.members * values

    def check_budget(
        self,
        max_parameters: int,
        max_activation_bytes: int,
        rows: int,
        key: str,
        names: tuple[str, str] = ("the limit", "the limit"),
    ) -> None:
        """Refuse (:class:`SpecError`) a network over either limit, before it is built;
        ``names`` says what each limit is called where it was set."""
        # (before the data is read, the config's checks pass one input: not worth naming)
        inputs = f", {self.in_features:,} inputs" if self.in_features > 1 else ""
        shape = f"{self.members} member(s){inputs}, hidden {list(self.hidden)}"
        count = self.parameter_count()
        if count > max_parameters:
            raise SpecError(
                f"{key}: {count:,} parameters ({shape}) is over {names[0]} of {max_parameters:,}"
            )
        size = self.activation_bytes(rows)
        if size > max_activation_bytes:
            raise SpecError(
                f"{key}: one forward pass over {rows:,} rows needs {size:,} bytes of activations "
                f"({shape}), over {names[1]} of {max_activation_bytes:,}"
            )


OPTIONAL_KEYS = frozenset({"arch", "k", "embedding", "categories"})


def _keys(node: Any, key: str, expected: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(node, dict):
        raise SpecError(f"{key}: expected a mapping, got {type(node).__name__}")
    unknown = sorted(map(str, set(node) - expected))
    missing = sorted(expected - set(node) - optional)
    if unknown:
        raise SpecError(f"{key}: unknown key(s) {', '.join(map(repr, unknown))}")
    if missing:
        raise SpecError(f"{key}: missing key(s) {', '.join(map(repr, missing))}")


# --------------------------------------------------------------------------- building


def build_activation(spec: ActivationSpec) -> nn.Module:
    """The activation module of a checked spec (closed mapping, no import by name)."""
    return ACTIVATIONS[spec.name].cls(**spec.args)


def build_head(name: str, num_classes: int) -> Head:
    """The head of a checked spec."""
    return HEADS[name](num_classes=num_classes)


def describe_activation(module: nn.Module, where: str) -> ActivationSpec:
    """``module`` (built from the user's config) in the checkpoint vocabulary, or ConfigError."""
    name = _ACTIVATION_NAMES.get(type(module))
    if name is None:
        raise ConfigError(
            f"{where}: {type(module).__module__}.{type(module).__qualname__} cannot be saved in "
            f"a safe checkpoint; use one of: {', '.join(ACTIVATIONS)}"
        )
    args = {arg: getattr(module, arg) for arg in ACTIVATIONS[name].args}
    try:
        return ActivationSpec.from_dict({"name": name, "args": args}, where)
    except SpecError as err:
        raise ConfigError(str(err)) from None


def head_name(head: Head, where: str) -> str:
    """The registry name of a head built from the user's config, or ConfigError."""
    name = _HEAD_NAMES.get(type(head))
    if name is None:
        raise ConfigError(
            f"{where}: {type(head).__qualname__} cannot be saved in a safe checkpoint; "
            f"use one of: {', '.join(f'pricenet.nn.heads.{c.__name__}' for c in HEADS.values())}"
        )
    return name


def network_spec(
    settings: Mapping,
    in_features: int,
    num_classes: int,
    members: int = 1,
    numeric: int = 0,
    categories: CategorySpec | None = None,
) -> NetworkSpec:
    """Describe the network the user's config asks for (train time; the config is trusted):
    ``settings`` holds its ``model``, ``activation``, ``loss``, ``trainer`` and (optionally)
    ``embedding`` nodes; ``numeric``: how many of the inputs (the first) are numeric columns;
    ``categories``: the embedded categorical features (the last inputs), or None.

    Refuses, before any training and before anything is built, an activation or head a
    checkpoint could not describe, sizes out of the checkpoint's bounds, and a network over
    the load ceilings or the config's ``trainer.max_parameters`` /
    ``trainer.max_activation_bytes`` (activations of one batch of ``trainer.batch_size``).
    """
    from hydra.utils import instantiate

    model = settings["model"]
    arch = model.get("arch", "mlp")
    k = int(model.get("k", 1))
    if arch == "mlp":
        hidden = tuple(int(size) for size in model["hidden"])
    else:
        hidden = (int(model["width"]),) * int(model["blocks"])
        if not 1 <= k <= MAX_SUBMODELS:
            raise ConfigError(f"model.k={k} is invalid: submodels per fit, in 1..{MAX_SUBMODELS}")
    _check_sizes(hidden, in_features, num_classes, members)
    embedding = _embedding_spec(settings.get("embedding"), numeric)
    overrides = model.get("layer_activations") or {}
    activations = []
    for i, size in enumerate(hidden):
        node = next((v for k, v in overrides.items() if str(k) == str(i)), None)
        where = f"model.layer_activations.{i}" if node is not None else "activation"
        activation = describe_activation(instantiate(node or settings["activation"]), where)
        try:
            activation.check_width(size, where)
        except SpecError as err:
            raise ConfigError(str(err)) from None
        activations.append(activation)
    head = instantiate(settings["loss"]["head"])
    spec = NetworkSpec(
        members=members,
        in_features=in_features,
        hidden=hidden,
        activations=tuple(activations),
        dropout=float(model["dropout"]),
        batch_norm=bool(model.get("batch_norm", False)),
        head=head_name(head, "loss.head"),
        num_classes=num_classes,
        arch=arch,
        k=k,
        embedding=embedding,
        categories=categories,
    )
    if arch != "mlp":
        from pricenet.nn.tabm import _check_activation

        try:
            _check_activation(build_activation(activations[0]))
        except TypeError as err:
            raise ConfigError(f"activation: {err} (model=tabm)") from None
    trainer = settings["trainer"]
    try:
        spec.check_budget(MAX_PARAMETERS, MAX_ACTIVATION_BYTES, PREDICT_ROWS, "model")
    except SpecError as err:
        raise ConfigError(
            f"{err}, the most a checkpoint may hold; shrink model.hidden or the fits "
            "(trainer.seeds, cv)"
        ) from None
    try:
        spec.check_budget(
            trainer["max_parameters"],
            trainer["max_activation_bytes"],
            trainer["batch_size"],
            "model",
            ("trainer.max_parameters", "trainer.max_activation_bytes"),
        )
    except SpecError as err:
        raise ConfigError(
            f"{err}; shrink model.hidden, trainer.batch_size or the fits (trainer.seeds, cv), "
            "or raise that limit"
        ) from None
    return spec


def _embedding_spec(node: Mapping | None, numeric: int) -> EmbeddingSpec | None:
    """The ``embedding`` group's node as a spec (None for ``embedding=none``); an embedding
    on a table without a numeric feature is refused."""
    if node is None or node.get("kind", "none") == "none":
        return None
    kind = node["kind"]
    if numeric < 1:
        raise ConfigError(
            f"embedding={kind}: the table has no numeric feature to embed; use embedding=none"
        )
    if kind == "piecewise_linear":
        values = {"max_bins": node["n_bins"], "version": node["version"]}
    else:
        values = {
            "n_frequencies": node["n_frequencies"],
            "frequency_init_scale": float(node["frequency_init_scale"]),
            "lite": node["lite"],
        }
    stored = {
        "kind": kind,
        "numeric": numeric,
        "d_embedding": node["d_embedding"],
        "activation": node["activation"],
        **values,
    }
    try:
        return EmbeddingSpec.from_dict(stored, "embedding")
    except SpecError as err:
        raise ConfigError(str(err)) from None


def _check_sizes(hidden: tuple[int, ...], in_features: int, num_classes: int, members: int) -> None:
    """The bounds of :meth:`NetworkSpec.from_dict`, as config errors naming the setting."""
    if members > MAX_MEMBERS:
        raise ConfigError(
            f"{members:,} fits (trainer.seeds x cv.folds x cv.repeats) are more than the "
            f"{MAX_MEMBERS} one checkpoint holds"
        )
    if len(hidden) > MAX_LAYERS:
        raise ConfigError(f"model.hidden has {len(hidden)} layers; at most {MAX_LAYERS}")
    for i, size in enumerate(hidden):
        if size > MAX_WIDTH:
            raise ConfigError(
                f"model.hidden[{i}]={size} is invalid: at most {MAX_WIDTH:,} units per layer"
            )
    if in_features > MAX_WIDTH:
        raise ConfigError(
            f"the data gives {in_features:,} model inputs (features, categories and "
            f"was-missing inputs); a network takes at most {MAX_WIDTH:,}"
        )
    if num_classes > MAX_CLASSES:
        raise ConfigError(f"the label has {num_classes:,} classes; at most {MAX_CLASSES:,}")
