"""Packed numeric embeddings (pricenet.nn.embeddings) against rtdl_num_embeddings, fit by fit."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.nn.embeddings import (
    NoNumericFeatures,
    PackedNumericEmbedding,
    PackedPeriodicEmbeddings,
    PackedPiecewiseLinearEmbeddings,
    check_numeric,
    fit_bins,
)
from pricenet.nn.packed import select_members
from pricenet.nn.spec import SpecError

rtdl = pytest.importorskip("rtdl_num_embeddings")


def fit_packed_bins(x, train_rows, n_bins, method="quantile", y=None, **kwargs):
    """Per fit, ``fit_bins`` of its own training rows only (as the run's ``fit_bins``)."""
    return [
        fit_bins(x[rows], n_bins, method, None if y is None else y[rows], **kwargs)
        for rows in train_rows
    ]


def load_checked(module, state, key="embedding", prefix=""):
    """``module`` holding ``state``, checked first (as the restore does)."""
    module.check_state(state, key, prefix)
    module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return module


def _table(rows: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized-looking columns: gaussian, skewed, integer-valued, binary; a label."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, generator=g)
    x[:, 1] = x[:, 1].exp()
    x[:, 2] = torch.randint(0, 5, (rows,), generator=g).float()
    x[:, 3] = (x[:, 3] > 0.3).float()
    y = torch.bucketize(x[:, 0] + x[:, 1], torch.tensor([0.0, 1.0, 2.0]))
    return x, y


def _fits_bins() -> list[list[torch.Tensor]]:
    """Three fits' bins with different counts per feature and per fit (a single-bin one)."""
    x, _ = _table()
    return [fit_bins(x[:300], 8), fit_bins(x[100:], 5), fit_bins(x[::3], 3)]


def _package_ple(bins, d, activation, version, seed):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns about single-bin features
        return rtdl.PiecewiseLinearEmbeddings(bins, d, activation=activation, version=version)


def _generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


SEEDS = (11, 12, 13)


# --------------------------------------------------------------------------- bins


def test_quantile_and_tree_bins_are_the_packages():
    x, y = _table()
    ours = fit_bins(x[:, :3], 16)
    theirs = rtdl.compute_bins(x[:, :3], 16)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    kwargs = {"min_samples_leaf": 16, "random_state": 0}
    ours = fit_bins(x[:, :3], 8, "tree", y, tree_kwargs=kwargs)
    theirs = rtdl.compute_bins(x[:, :3], 8, tree_kwargs=kwargs, y=y, regression=False)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert any(len(b) > 3 for b in ours)  # the trees split


def test_few_distinct_values_fall_back_to_fewer_bins_and_constants_to_one():
    x, _ = _table(50)
    x = torch.cat([x, torch.full((50, 1), 0.25)], dim=1)  # constant on these rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback is documented, not a warning
        bins = fit_bins(x, 48)
    counts = [len(b) - 1 for b in bins]
    assert counts[0] == 48
    assert len(fit_bins(x[:10], 48)[0]) - 1 == 9  # n_bins lowered to the rows minus one
    # five integer values: repeated quantiles merge (interpolated ones between them stay)
    assert 4 <= counts[2] < 48 and bins[2][0] == 0 and bins[2][-1] == 4
    assert counts[3] <= 2 and bins[3][0] == 0 and bins[3][-1] == 1  # binary
    assert torch.equal(bins[4], torch.tensor([-0.75, 1.25]))  # [v - 1, v + 1]
    few = fit_bins(x[:2], 48)  # two rows: one bin per varying column
    assert [len(b) for b in few] == [2] * 5
    assert all(bool((b.diff() > 0).all()) and b.dtype == torch.float32 for b in bins + few)


@pytest.mark.parametrize("method", ["quantile", "tree"])
def test_bins_are_fitted_on_each_fits_training_rows_only(method):
    x, y = _table()
    train = [torch.arange(0, 300), torch.arange(100, 400)]
    kwargs = {"tree_kwargs": {"min_samples_leaf": 8}} if method == "tree" else {}
    clean = fit_packed_bins(x, train, 8, method, y, **kwargs)
    for m, rows in enumerate(train):
        held = torch.ones(len(x), dtype=torch.bool)
        held[rows] = False
        poisoned, labels = x.clone(), y.clone()
        poisoned[held] = float("nan")
        labels[held] = 3 - labels[held]
        redone = fit_packed_bins(poisoned, [rows], 8, method, labels, **kwargs)[0]
        assert all(torch.equal(a, b) for a, b in zip(redone, clean[m], strict=True))
    # the check can fail: a changed training row (150 is in both fits) changes the bins
    changed = x.clone()
    changed[150] = 1e6
    redone = fit_packed_bins(changed, train, 8, method, y, **kwargs)
    assert not torch.equal(redone[0][0], clean[0][0])
    assert not torch.equal(redone[1][0], clean[1][0])


def test_no_numeric_feature_is_one_error_line_and_exit_2(capsys):
    with pytest.raises(NoNumericFeatures, match="embedding=piecewise_linear embeds numeric"):
        fit_bins(torch.zeros(10, 0), 8)
    with pytest.raises(NoNumericFeatures, match="embedding=periodic"):
        PackedPeriodicEmbeddings(2, 0)
    with pytest.raises(NoNumericFeatures):
        check_numeric([], "periodic")
    with pytest.raises(ConfigError, match=r"embedding.n_bins=1 is invalid"):
        fit_bins(torch.randn(10, 2), 1)

    @exit_on_user_error
    def command():
        fit_bins(torch.zeros(10, 0), 8)

    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: embedding=piecewise_linear")


# --------------------------------------------------------------------------- piecewise linear


@pytest.mark.parametrize("version", ["A", "B"])
@pytest.mark.parametrize("activation", [True, False])
def test_piecewise_each_fit_is_the_package_with_the_same_bins(version, activation):
    bins = _fits_bins()
    packed = PackedPiecewiseLinearEmbeddings(
        3, bins, 4, activation, version, generators=_generators(SEEDS)
    )
    assert packed.max_bins == 8 and packed.n_bins.tolist()[2] != packed.n_bins.tolist()[0]
    x = 3 * torch.randn(3, 9, 4)  # also outside every fit's bins
    out = packed(x)
    assert out.shape == (3, 9, 16)
    for m, seed in enumerate(SEEDS):
        ref = _package_ple(bins[m], 4, activation, version, seed)
        # initialised as the package initialises under torch.manual_seed(seed)
        assert torch.equal(ref.linear.weight, packed.as_package_weight(m))
        if version == "B":
            assert torch.equal(ref.linear0.weight, packed.linear0_weight[m])
            assert torch.equal(ref.linear0.bias, packed.linear0_bias[m])
        torch.testing.assert_close(ref(x[m]).flatten(-2), out[m], rtol=0, atol=1e-6)
    with torch.no_grad():  # trained-looking weights (B's PLE weights start at zero)
        packed.weight.normal_(generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)  # attributions differentiate with respect to the input
    out = packed(x)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    for m, seed in enumerate(SEEDS):
        ref = _package_ple(bins[m], 4, activation, version, seed)
        with torch.no_grad():
            ref.linear.weight.copy_(packed.as_package_weight(m))
            if version == "A":
                ref.linear.bias.copy_(packed.bias[m])
        x_m = x[m].detach().requires_grad_(True)
        expected = ref(x_m).flatten(-2)
        torch.testing.assert_close(expected, out[m], rtol=0, atol=1e-6)
        (grad_m,) = torch.autograd.grad(expected.pow(2).sum(), x_m)
        torch.testing.assert_close(grad[m], grad_m, rtol=1e-5, atol=1e-5)


def test_a_fit_is_initialised_the_same_whatever_the_number_of_fits():
    bins = _fits_bins()
    many = PackedPiecewiseLinearEmbeddings(3, bins, 4, True, "A", generators=_generators(SEEDS))
    alone = PackedPiecewiseLinearEmbeddings(
        1, bins[2:], 4, True, "A", max_bins=8, generators=_generators(SEEDS[2:])
    )
    assert all(torch.equal(alone.state_dict()[k], v[2:]) for k, v in many.state_dict().items())
    periodic = PackedPeriodicEmbeddings(3, 4, 6, 0.1, 5, generators=_generators(SEEDS))
    single = PackedPeriodicEmbeddings(1, 4, 6, 0.1, 5, generators=_generators(SEEDS[1:2]))
    assert all(
        torch.equal(single.state_dict()[k], v[1:2]) for k, v in periodic.state_dict().items()
    )


def test_padding_never_leaks_between_features_or_fits():
    bins = _fits_bins()
    packed = PackedPiecewiseLinearEmbeddings(3, bins, 4, False, "A", generators=_generators(SEEDS))
    x = 3 * torch.randn(3, 9, 4)
    before = packed(x)
    with torch.no_grad():  # the padding components' weights: never multiplied by non-zero
        for m in range(3):
            for f in range(4):
                n = int(packed.n_bins[m, f])
                packed.weight[m, f, n - 1 : packed.max_bins - 1] = 1e6
    torch.testing.assert_close(packed(x), before, rtol=0, atol=0)
    other = [list(fit) for fit in bins]
    other[1][2] = torch.tensor([-5.0, -1.0, 0.0, 9.0])  # fit 1, feature 2's bins
    changed = PackedPiecewiseLinearEmbeddings(3, other, 4, False, "A", max_bins=8)
    changed.load_state_dict(
        {**packed.state_dict(), "edges": changed.edges, "n_bins": changed.n_bins}
    )
    after = changed(x)
    assert torch.equal(after[[0, 2]], before[[0, 2]])  # other fits
    feature = slice(2 * 4, 3 * 4)
    assert torch.equal(after[1, :, :8], before[1, :, :8])  # other features of fit 1
    assert torch.equal(after[1, :, 12:], before[1, :, 12:])
    assert not torch.equal(after[1, :, feature], before[1, :, feature])


def _all_kinds() -> list[torch.nn.Module]:
    bins = _fits_bins()
    return [
        PackedPiecewiseLinearEmbeddings(3, bins, 4, True, "A", generators=_generators(SEEDS)),
        PackedPiecewiseLinearEmbeddings(3, bins, 4, False, "B", generators=_generators(SEEDS)),
        PackedPeriodicEmbeddings(3, 4, 6, 0.5, 5, lite=False, generators=_generators(SEEDS)),
        PackedPeriodicEmbeddings(3, 4, 6, 0.5, 5, lite=True, generators=_generators(SEEDS)),
    ]


@pytest.mark.parametrize("kind", range(4))
def test_a_gradient_step_on_fit_0_leaves_the_other_fits_untouched(kind):
    inner = _all_kinds()[kind]
    if isinstance(inner, PackedPiecewiseLinearEmbeddings) and inner.version == "B":
        with torch.no_grad():
            inner.weight.normal_()
    layer = PackedNumericEmbedding(3, [0, 1, 3, 4], 6, inner)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    x = torch.randn(3, 9, 6)
    layer(x)[0].pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad[1:].abs().max() == 0, name
        assert p.grad[0].abs().max() > 0, name
    optimizer.step()
    after = layer.state_dict()
    assert all(torch.equal(after[k][1:], v[1:]) for k, v in before.items())
    assert not torch.equal(after["inner.weight"][0], before["inner.weight"][0])


@pytest.mark.parametrize("kind", range(4))
def test_member_is_select_members_and_computes_that_fit(kind):
    inner = _all_kinds()[kind]
    layer = PackedNumericEmbedding(3, [1, 2, 4, 5], 7, inner)
    x = torch.randn(3, 5, 7)
    for m in range(3):
        single = layer.member(m)
        expected = select_members(layer.state_dict(), [m])
        assert single.state_dict().keys() == expected.keys()
        assert all(torch.equal(single.state_dict()[k], v) for k, v in expected.items())
        torch.testing.assert_close(single(x[m : m + 1]), layer(x)[m : m + 1], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- periodic


@pytest.mark.parametrize(("lite", "activation"), [(False, True), (False, False), (True, True)])
def test_periodic_each_fit_is_the_package(lite, activation):
    packed = PackedPeriodicEmbeddings(
        3, 4, 8, 0.3, 5, lite=lite, activation=activation, generators=_generators(SEEDS)
    )
    x = torch.randn(3, 9, 4)
    out = packed(x)
    assert out.shape == (3, 9, 20)
    for m, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        ref = rtdl.PeriodicEmbeddings(
            4, 5, n_frequencies=8, frequency_init_scale=0.3, activation=activation, lite=lite
        )
        assert torch.equal(ref.periodic.weight, packed.frequencies[m])
        weight = ref.linear.weight.T if lite else ref.linear.weight
        assert torch.equal(weight, packed.weight[m])
        torch.testing.assert_close(ref(x[m]).flatten(-2), out[m], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="lite=True is allowed only"):
        PackedPeriodicEmbeddings(1, 4, lite=True, activation=False)


# --------------------------------------------------------------------------- the input layer


def test_numeric_positions_are_embedded_and_the_others_pass_through():
    inner = PackedPeriodicEmbeddings(2, 2, 4, 0.5, 3, generators=_generators(SEEDS[:2]))
    layer = PackedNumericEmbedding(2, [3, 0], 5, inner)
    assert layer.out_features == 2 * 3 + 3
    x = torch.randn(6, 5)  # one batch for every fit
    out = layer(x)
    assert out.shape == (2, 6, 9)
    assert torch.equal(out[:, :, 6:], x[:, [1, 2, 4]].expand(2, 6, 3))
    torch.testing.assert_close(out[:, :, :6], inner(x[:, [3, 0]].expand(2, 6, 2)))
    with pytest.raises(ValueError, match="expected 3 of 2"):
        PackedNumericEmbedding(2, [0, 1, 2], 5, inner)


# --------------------------------------------------------------------------- checkpoints


def _round_trip(layer: PackedNumericEmbedding) -> dict[str, torch.Tensor]:
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _structure(kind: int) -> PackedNumericEmbedding:
    """What a loader builds from the spec alone (placeholder bins), to load a state into."""
    if kind < 2:
        inner = PackedPiecewiseLinearEmbeddings.structure(3, 4, 8, 4, kind == 0, "AB"[kind])
    else:
        inner = PackedPeriodicEmbeddings(3, 4, 6, 0.5, 5, lite=kind == 3)
    return PackedNumericEmbedding(3, [0, 1, 3, 4], 6, inner)


@pytest.mark.parametrize("kind", range(4))
def test_checkpoint_round_trip_carries_the_bins(kind):
    layer = PackedNumericEmbedding(3, [0, 1, 3, 4], 6, _all_kinds()[kind])
    state = _round_trip(layer)
    if kind < 2:
        assert {"inner.edges", "inner.n_bins"} <= state.keys()
    with torch.device("meta"):
        _structure(kind).check_state(state, "model.0")  # shapes from a storage-less structure
    restored = load_checked(_structure(kind), state, "model.0")
    x = 2 * torch.randn(3, 7, 6)
    assert torch.equal(restored(x), layer(x))


def _crafted(state, key, fn):
    state = {k: v.clone() for k, v in state.items()}
    state[key] = fn(state[key])
    return state


def _set(index, value):
    def fn(t):
        t[index] = value
        return t

    return fn


@pytest.mark.parametrize(
    ("key", "fn", "message"),
    [
        ("inner.edges", _set((1, 2, 1), float("nan")), r"model\.0\.inner\.edges: holds NaN"),
        ("inner.edges", lambda t: t[:, :, :-1], r"inner\.edges: shape \(3, 4, 8\), expected"),
        ("inner.edges", lambda t: t.double(), r"inner\.edges: dtype torch\.float64"),
        ("inner.edges", lambda t: t.flip(-1), r"edges\[0, 0\]: bin edges do not strictly"),
        ("inner.edges", _set((2, 1, 8), 99.0), r"edges\[2, 1\]: padding after the last edge"),
        ("inner.n_bins", _set((1, 3), 0), r"inner\.n_bins\[1, 3\]: 0 is not in 1\.\.8"),
        ("inner.n_bins", _set((0, 0), 9), r"inner\.n_bins\[0, 0\]: 9 is not in 1\.\.8"),
        ("inner.n_bins", lambda t: t.float(), r"inner\.n_bins: dtype torch\.float32"),
        ("inner.weight", _set((0, 0, 0, 0), float("inf")), r"inner\.weight: holds NaN"),
    ],
)
def test_a_crafted_piecewise_state_is_refused_with_one_line(key, fn, message):
    state = _round_trip(PackedNumericEmbedding(3, [0, 1, 3, 4], 6, _all_kinds()[0]))
    crafted = _crafted(state, key, fn)
    with pytest.raises(SpecError, match=message) as info:
        load_checked(_structure(0), crafted, "model.0")
    assert "\n" not in str(info.value)


def test_crafted_states_missing_or_extra_keys_and_tiny_bins_are_refused():
    layer = PackedNumericEmbedding(3, [0, 1, 3, 4], 6, _all_kinds()[0])
    state = _round_trip(layer)
    with pytest.raises(SpecError, match=r"model\.0\.inner: missing bias"):
        load_checked(
            _structure(0), {k: v for k, v in state.items() if k != "inner.bias"}, "model.0"
        )
    with pytest.raises(SpecError, match=r"model\.0: unexpected numeric_index"):
        load_checked(_structure(0), {**state, "numeric_index": torch.arange(4)}, "model.0")
    tiny = _crafted(state, "inner.edges", _set((0, 0, slice(0, 9)), torch.arange(9) * 1e-45))
    tiny["inner.n_bins"][0, 0] = 8
    with pytest.raises(SpecError, match=r"edges\[0, 0\]: bin edges are too close"):
        load_checked(_structure(0), tiny, "model.0")
    periodic = _round_trip(PackedNumericEmbedding(3, [0, 1, 3, 4], 6, _all_kinds()[3]))
    with pytest.raises(SpecError, match=r"inner\.frequencies: shape \(3, 4, 5\)"):
        load_checked(_structure(3), _crafted(periodic, "inner.frequencies", lambda t: t[..., :5]))
    with pytest.raises(SpecError, match=r"inner\.bias: holds NaN"):
        load_checked(_structure(3), _crafted(periodic, "inner.bias", _set(0, float("nan"))))


# --------------------------------------------------------------------------- ONNX


class _Probe(torch.nn.Module):
    """One input batch ``[B, width]`` -> ``[B, M, out]``: rows first, as the export names them."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).transpose(0, 1)


@pytest.mark.parametrize("kind", range(4))
def test_onnx_matches_torch(kind):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from pricenet.export import onnx_bytes, onnx_session

    inner = _all_kinds()[kind]
    with torch.no_grad():
        inner.weight.normal_(generator=torch.Generator().manual_seed(1))
    probe = _Probe(PackedNumericEmbedding(3, [0, 1, 3, 4], 6, inner)).eval()
    model = onnx_bytes(probe, (torch.randn(4, 6),))
    x = 3 * torch.randn(11, 6)  # another batch size than the example's
    got = onnx_session(model).run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        expected = probe(x)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-5)
