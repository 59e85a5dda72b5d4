"""PackedTabM against the reference ``tabm`` package (0.0.3): same layers, same init, same
outputs, per fit; fits share nothing."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pricenet.engine.epochs import plan_epoch
from pricenet.nn.heads import CategoricalHead, CoralHead, OrdinalHead
from pricenet.nn.packed import select_members
from pricenet.nn.tabm import (
    ARCHS,
    PackedBatchEnsembleLinear,
    PackedLinearEnsemble,
    PackedScaleEnsemble,
    PackedSharedLinear,
    PackedTabM,
    combine_submodels,
    tabm_parameter_count,
)

tabm = pytest.importorskip("tabm")

REFERENCE_ARCH = {"tabm": "tabm", "mini": "tabm-mini", "packed": "tabm-packed"}
IN, WIDTH, BLOCKS, OUT, K = 7, 16, 3, 4, 5


def _reference(arch: str, seed: int, scaling_init: str | None = None, **kw) -> nn.Module:
    """``tabm.TabM.make`` with its defaults, drawn from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    options = {"n_num_features": IN, "d_out": OUT, "k": K, "n_blocks": BLOCKS, "d_block": WIDTH}
    options |= {"dropout": 0.0, "arch_type": REFERENCE_ARCH[arch], **kw}
    if scaling_init is not None:
        options["start_scaling_init"] = scaling_init
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tabm.TabM.make(**options).eval()


def _model(arch: str, members: int = 3, seeds=None, **kw) -> PackedTabM:
    model = PackedTabM(members, K, IN, WIDTH, BLOCKS, 0.0, OUT, arch, **kw)
    if seeds is not None:
        model.reset_parameters([torch.Generator().manual_seed(s) for s in seeds])
    return model.eval()


@torch.no_grad()
def _load_reference(model: PackedTabM, m: int, ref: nn.Module) -> None:
    """Copy the reference's weights into fit ``m`` of ``model``."""
    linears = [b[0] for b in ref.backbone.blocks]
    for mine, theirs in zip(model.linears()[:-1], linears, strict=True):
        if isinstance(mine, PackedBatchEnsembleLinear):
            mine.weight[m] = theirs.weight.T
            mine.r[m], mine.s[m], mine.bias[m] = theirs.r, theirs.s, theirs.bias
        elif isinstance(mine, PackedSharedLinear):
            mine.weight[m], mine.bias[m, 0] = theirs.weight.T, theirs.bias
        else:
            mine.weight[m], mine.bias[m] = theirs.weight, theirs.bias
    if model.arch == "mini":
        model[0].r[m] = ref.backbone.affine.weight
    model.head.weight[m], model.head.bias[m] = ref.output.weight, ref.output.bias


@torch.no_grad()
def _scramble(module: nn.Module, seed: int) -> None:
    """Every parameter random (no ones, no shared biases): nothing matches by accident."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------- layers


@pytest.mark.parametrize("rows", [3, 40])  # the adapters on the rows, then on the weight
def test_a_batch_ensemble_layer_is_k_linears_from_its_shared_weight_and_adapters(rows):
    layer = PackedBatchEnsembleLinear(2, K, IN, WIDTH)
    _scramble(layer, 0)
    x = torch.randn(2, 1, rows, IN)
    y = layer(x)
    assert y.shape == (2, K, rows, WIDTH)
    for m in range(2):
        for i in range(K):
            linear = nn.Linear(IN, WIDTH)
            with torch.no_grad():
                w = layer.r[m, i].unsqueeze(1) * layer.weight[m] * layer.s[m, i]
                linear.weight.copy_(w.T)
                linear.bias.copy_(layer.bias[m, i])
            torch.testing.assert_close(y[m, i], linear(x[m, 0]), atol=1e-5, rtol=1e-5)


def test_both_ways_of_applying_the_adapters_agree_in_values_and_gradients():
    layer = PackedBatchEnsembleLinear(2, K, IN, WIDTH)
    _scramble(layer, 2)
    x = torch.randn(2, K, 9, IN)
    results = []
    for path in (layer._through_rows, layer._through_weights):
        layer.zero_grad()
        y = path(x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in layer.parameters()]))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_batch_ensemble_layer_equals_the_packages_for_every_fit():
    layer = PackedBatchEnsembleLinear(3, K, IN, WIDTH)
    _scramble(layer, 1)
    ref = tabm.LinearBatchEnsemble(IN, WIDTH, k=K, scaling_init="random-signs")
    x = torch.randn(11, K, IN)  # a different batch per submodel
    for m in range(3):
        with torch.no_grad():
            ref.weight.copy_(layer.weight[m].T)
            ref.r.copy_(layer.r[m])
            ref.s.copy_(layer.s[m])
            ref.bias.copy_(layer.bias[m])
        got = layer(x.transpose(0, 1).expand(3, K, 11, IN))[m].transpose(0, 1)
        torch.testing.assert_close(got, ref(x), atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize("arch", ARCHS)
def test_one_fit_with_the_references_weights_gives_its_outputs(arch):
    ref = _reference(arch, seed=3)
    _scramble(ref, 4)
    model = _model(arch)
    _scramble(model, 5)
    _load_reference(model, 1, ref)
    x = torch.randn(13, IN)
    out = model(x)
    assert out.shape == (3, 13, K, OUT)
    torch.testing.assert_close(out[1], ref(x), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out[0], out[1])  # the other fits are other models


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scaling_init", ["random-signs", "normal"])
def test_each_fit_starts_exactly_where_the_package_does_with_its_seed(arch, scaling_init):
    seeds = [10, 11, 12]
    model = _model(arch, seeds=seeds, scaling_init=scaling_init)
    x = torch.randn(6, IN)
    out = model(x)
    for m, seed in enumerate(seeds):
        init = None if arch == "packed" else scaling_init
        ref = _reference(arch, seed, init)
        single = _model(arch, members=1)
        _scramble(single, 0)
        _load_reference(single, 0, ref)
        _same_parameters(model.member(m).state_dict(), single.state_dict())
        torch.testing.assert_close(out[m], ref(x), atol=0, rtol=0)


def test_the_first_scaling_follows_the_feature_chunks():
    chunks = [2, 1, 4]
    model = _model("tabm", members=1, seeds=[0], chunks=chunks)
    ref = _reference("tabm", 0)  # TabM's chunks are one column per numerical feature
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = tabm.make_tabm_backbone(
            d_in=IN,
            n_blocks=BLOCKS,
            d_block=WIDTH,
            dropout=0.0,
            k=K,
            start_scaling_init="random-signs",
            start_scaling_init_chunks=chunks,
        )
    r = model[0].r[0]
    torch.testing.assert_close(r, backbone.blocks[0][0].r, atol=0, rtol=0)
    assert torch.equal(r[:, 0], r[:, 1]) and torch.equal(r[:, 3], r[:, 6])
    assert not torch.equal(r, ref.backbone.blocks[0][0].r)


def test_the_initialisation_has_tabms_distributions():
    model = _model("tabm", members=2, seeds=[0, 1])
    first, *others = model.linears()[:-1]
    assert set(first.r.unique().tolist()) == {-1.0, 1.0}  # random signs
    assert torch.equal(first.s, torch.ones_like(first.s))
    for layer in others:
        assert torch.equal(layer.r, torch.ones_like(layer.r))
        assert torch.equal(layer.s, torch.ones_like(layer.s))
    for layer in model.linears():
        bound = layer.in_features**-0.5
        assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 3
    for layer in model.linears()[:-1]:  # one bias shared by the k submodels at init
        assert torch.equal(layer.bias, layer.bias[:, :1].expand_as(layer.bias))
    head = model.head  # k independent heads
    assert not torch.equal(head.bias[:, 0], head.bias[:, 1])
    assert not torch.equal(model.linears()[0].weight[0], model.linears()[0].weight[1])
    mini = _model("mini", members=1, seeds=[0], scaling_init="normal")
    assert isinstance(mini[0], PackedScaleEnsemble) and mini[0].r.abs().max() > 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_a_fits_init_does_not_depend_on_how_many_fits_there_are(arch):
    alone = _model(arch, members=1, seeds=[42])
    packed = _model(arch, members=4, seeds=[1, 2, 42, 3])
    _same_parameters(packed.member(2).state_dict(), alone.state_dict())


def test_arch_packed_is_k_independent_mlps():
    model = _model("packed", members=2)
    _scramble(model, 6)
    x = torch.randn(2, 8, IN)
    out = model(x)
    for m in range(2):
        for i in range(K):
            layers: list[nn.Module] = []
            for layer in model.linears():
                linear = nn.Linear(layer.in_features, layer.out_features)
                with torch.no_grad():
                    linear.weight.copy_(layer.weight[m, i].T)
                    linear.bias.copy_(layer.bias[m, i])
                layers += [linear, nn.ReLU()]
            mlp = nn.Sequential(*layers[:-1])
            torch.testing.assert_close(out[m, :, i], mlp(x[m]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_fits_share_no_parameter(arch):
    model = _model(arch, members=3).train()
    _scramble(model, 7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(torch.randn(3, 10, IN))
    out[0].square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad[0].abs().sum() > 0, name
        assert torch.all(p.grad[1:] == 0), name
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    for key, value in model.state_dict().items():
        assert torch.equal(value[1:], before[key][1:]), key
        assert not torch.equal(value[0], before[key][0]), key


@pytest.mark.parametrize("arch", ARCHS)
def test_fits_split_and_stack_through_state_dicts(arch):
    model = _model(arch, members=3, seeds=[0, 1, 2])
    x = torch.randn(3, 5, IN)
    out = model(x)
    torch.testing.assert_close(model.member(2)(x[2:]), out[2:], atol=0, rtol=0)
    states = [select_members(model.state_dict(), [m]) for m in (2, 0)]
    stacked = model.from_members(states).eval()
    assert stacked.members == 2
    torch.testing.assert_close(stacked(x[[2, 0]]), out[[2, 0]], atol=0, rtol=0)
    assert model.with_members(5)(torch.randn(4, IN)).shape == (5, 4, K, OUT)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("coral", [False, True])
def test_the_parameter_count_is_known_before_building(arch, coral):
    head = CoralHead(4) if coral else CategoricalHead(4)
    model = PackedTabM(
        3, K, IN, WIDTH, 2, 0.1, head.backbone_outputs, arch, output_layer=head.output_layer()
    )
    expected = tabm_parameter_count(
        K, IN, WIDTH, 2, head.backbone_outputs, arch, rank_biases=3 if coral else 0
    )
    assert model.parameter_count() == 3 * expected
    if not coral:
        ref = _reference(arch, 0, n_blocks=2)
        assert expected == sum(p.numel() for p in ref.parameters())


def test_coral_rank_biases_are_per_fit_and_submodel():
    head = CoralHead(4)
    model = PackedTabM(2, K, IN, WIDTH, 1, 0.0, 1, "tabm", output_layer=head.output_layer())
    out = model(torch.randn(6, IN))
    assert out.shape == (2, 6, K, 3)
    score = out[..., :1] - model[-1].bias[:, :, :1].unsqueeze(1)
    torch.testing.assert_close(out - score, model[-1].bias.unsqueeze(1).expand_as(out))


# ---------------------------------------------------------------------------- combining k


def test_the_submodels_combine_in_the_heads_space():
    out = torch.randn(2, 9, K, 4)
    combined = combine_submodels(CategoricalHead(4), out)
    assert combined.shape == (2, 9, 4)
    torch.testing.assert_close(combined.softmax(-1), out.softmax(-1).mean(2))
    ordinal = combine_submodels(OrdinalHead(4), out[..., :3])
    torch.testing.assert_close(ordinal.sigmoid(), out[..., :3].sigmoid().mean(2))
    single = combine_submodels(CategoricalHead(4), out[:, :, :1])
    assert torch.equal(single, out[:, :, 0])


# ---------------------------------------------------------------------------- dropout


def test_dropout_masks_each_row_submodel_and_unit_from_the_fits_noise():
    model = PackedTabM(2, K, IN, WIDTH, 1, 0.5, OUT, "tabm").train()
    assert model.noise_widths() == [K * WIDTH]
    x = torch.randn(2, 6, IN)
    uniforms = torch.rand(2, 6, K * WIDTH)
    (mask,) = model.prepare_noise([uniforms.clone()])
    torch.testing.assert_close(mask, (uniforms >= 0.5).float() * 2)
    model.set_noise([mask])
    got = model(x, direct=True)
    model.set_noise(None)
    hidden = torch.relu(model[0](x.unsqueeze(1)))  # [M, k, B, width]
    dropped = hidden * mask.view(2, 6, K, WIDTH).transpose(1, 2)
    expected = model[3](dropped).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # a fit's output depends on its own noise only
    other = mask.clone()
    other[1] = 2.0 - other[1]
    model.set_noise([other])
    changed = model(x)
    model.set_noise(None)
    assert torch.equal(changed[0], got[0]) and not torch.equal(changed[1], got[1])
    # a shorter batch takes the first rows of the noise
    model.set_noise([mask])
    torch.testing.assert_close(model(x[:, :4]), got[:, :4], atol=0, rtol=0)
    model.set_noise(None)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_the_engines_epoch_plan_drives_the_dropout():
    members, rows = 2, 40
    model = PackedTabM(members, K, IN, WIDTH, 2, 0.2, OUT, "mini").train()
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    plan = plan_epoch(
        [rows, 30], [0, 1], 16, generators, noise_widths=model.noise_widths(), padded=rows
    )
    noise = model.prepare_noise(plan.uniforms)
    steps = list(zip(*(n.unbind(1) for n in noise), strict=True))
    x = torch.randn(members, 16, IN)
    outs = []
    for step in steps[:2]:
        model.set_noise(step)
        outs.append(model(x, direct=True))
    model.set_noise(None)
    assert outs[0].shape == (members, 16, K, OUT)
    assert not torch.equal(outs[0], outs[1])  # a new mask at each step
    kept = steps[0][0].view(members, 16, K, WIDTH)
    assert 0.6 < (kept > 0).float().mean() < 0.95


def test_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="arch"):
        PackedTabM(1, K, IN, WIDTH, 1, 0.0, OUT, "wide")
    with pytest.raises(TypeError, match="PReLU"):
        PackedTabM(1, K, IN, WIDTH, 1, 0.0, OUT, activation=nn.PReLU())
    with pytest.raises(TypeError, match="RReLU"):
        PackedTabM(1, K, IN, WIDTH, 1, 0.0, OUT, activation=nn.RReLU())
    with pytest.raises(ValueError, match="chunks"):
        PackedTabM(1, K, IN, WIDTH, 1, 0.0, OUT, chunks=[3, 3])
    with pytest.raises(ValueError, match="generators"):
        _model("tabm", members=2, seeds=[1])
    assert isinstance(_model("packed").head, PackedLinearEnsemble)


def test_the_cost_probe_times_every_contender():
    import importlib

    probe = importlib.import_module("scripts.bench.tabm_cost")
    result = probe.measure(rows=40, batch=16, ks=(2,), fits=2, archs=("tabm", "packed"), epochs=1)
    names = [r["name"] for r in result]
    assert names == [
        "mlp x1",
        "mlp x2",
        "tabm k=2 x1",
        "tabm k=2 x2",
        "packed k=2 x1",
        "packed k=2 x2",
    ]
    assert all(r["step_ms"] > 0 and r["wall_ms"] > 0 for r in result)
    by_name = {r["name"]: r for r in result}
    assert by_name["mlp x1"]["vs_mlp"] == by_name["tabm k=2 x1"]["vs_one_fit"] == 1.0
    ratio = by_name["tabm k=2 x2"]["step_ms"] / by_name["tabm k=2 x1"]["step_ms"]
    assert by_name["tabm k=2 x2"]["vs_one_fit"] == pytest.approx(ratio)
    assert "tabm k=2 x2" in probe.render(result)


def test_the_cost_probe_times_specs_behind_the_piecewise_linear_embedding():
    import importlib

    probe = importlib.import_module("scripts.bench.tabm_cost")
    specs = [probe.Spec(1, 0, "mlp", 8, 1, True), probe.Spec(2, 3, "tabm", 8, 1, True)]
    built = probe.build(specs[1], torch.randn(2, 40, 5), classes=3, dropout=0.0)
    # the embedding's 16 dims per feature feed the first BatchEnsemble layer
    assert built.model.backbone.linears()[0].in_features == 5 * probe.PLE_DIM
    assert built.model(torch.randn(2, 4, 5)).shape == (2, 4, 3, 3)
    result = probe.time_steps(specs, rows=40, features=5, classes=3, batch=16, epochs=1)
    assert [r["name"] for r in result] == ["mlp +PLE x1", "tabm k=3 +PLE x2"]
    assert all(r["embedding"] and r["step_ms"] > 0 for r in result)


def test_the_mean_of_the_submodels_losses_is_a_mean_over_repeated_rows():
    out, y = torch.randn(2, 6, K, 4), torch.randint(0, 4, (2, 6))
    per_submodel = torch.stack(
        [
            torch.stack([nn.functional.cross_entropy(out[m, :, i], y[m]) for i in range(K)])
            for m in range(2)
        ]
    )
    rows = nn.functional.cross_entropy(
        out.flatten(1, 2).flatten(0, 1), y.repeat_interleave(K, 1).flatten(), reduction="none"
    )
    torch.testing.assert_close(rows.view(2, -1).mean(1), per_submodel.mean(1))
