"""TabM, numeric embeddings and the loss options in real runs (issue 19).

What the unit tests of :mod:`pricenet.nn.tabm` and :mod:`pricenet.nn.embeddings` cannot see:
the trainer trains a TabM on the mean of its submodels' losses and predicts with the mean of
their probabilities; the fits of a CV run share nothing, embedding included; the bins see a
fit's training rows only; every new layer kind survives best.pt, the Predictor and ONNX;
crafted checkpoints and bad configs are one-line errors; label smoothing and class weights
are torch's; a TabM CV run with early stopping resumes exactly; attributions work on it.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_refused_before_the_run, build, train

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.checkpoints.restore import resume_state
from pricenet.engine.loop import MemberData
from pricenet.errors import CheckpointError
from pricenet.inference.predictor import Predictor
from pricenet.nn.network import Network
from pricenet.run.fits import build_trainer, fit_bins, load_data, plan_for, prepare
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
# A small TabM (k=4 submodels of 2 blocks of 32): a few seconds a run on a CPU.
SMALL_TABM = ("model=tabm", "model.k=4", "model.width=32", "model.blocks=2")
SMALL_PLE = ("embedding=piecewise_linear", "embedding.n_bins=8", "embedding.d_embedding=4")


def _batch(trainer, rows: int = 32):
    """The first ``rows`` training rows of every fit, as one step of the loop sees them."""
    data = trainer.train
    xb, tb, mb = data.x[:, :rows], data.target[:, :rows], data.mask[:, :rows]
    nb = mb.sum(1).to(xb.dtype)
    return xb, tb, mb, nb, bool(mb.all())


# ------------------------------------------------------------------ 1. the submodels' losses


@pytest.mark.parametrize("arch", ["tabm", "mini", "packed"])
@pytest.mark.parametrize("embedding", ["none", "piecewise_linear"])
def test_the_training_loss_is_the_mean_of_the_submodels_losses(compose_cfg, arch, embedding):
    cfg = compose_cfg(
        *SMALL_TABM, f"model.arch={arch}", "model.dropout=0", f"embedding={embedding}", *LEAN
    )
    trainer = build(cfg)
    model = trainer.model
    assert isinstance(model, Network) and model.submodels == 4
    xb, tb, mb, nb, full = _batch(trainer)
    with torch.no_grad():
        per_submodel = model(xb, submodels=True)  # [1, 32, 4, 4]
        loss = trainer._loss(xb, tb, mb, nb, full)
    assert per_submodel.shape == (1, 32, 4, 4)
    expected = torch.stack([F.cross_entropy(per_submodel[0, :, i], tb[0]) for i in range(4)])
    # the submodels really differ, so their mean is not any one of them
    assert expected.std() > 1e-4
    torch.testing.assert_close(loss, expected.mean().view(1), rtol=1e-6, atol=1e-7)
    # one optimizer step returns the loss at its starting point, and then moves the weights
    before = copy.deepcopy(model.state_dict())
    stepped = trainer.train_step(xb, tb, mb, nb, full, None)
    torch.testing.assert_close(stepped, loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluation_predicts_with_the_mean_of_the_submodels_probabilities(compose_cfg):
    trainer = build(compose_cfg(*SMALL_TABM, "cv=kfold", "cv.folds=3", *LEAN))
    model = trainer.model
    for _ in range(20):  # a few steps away from the init: the submodels disagree
        trainer.train_step(*_batch(trainer, 64), None)
    model.eval()
    with torch.no_grad():
        val = trainer.val
        probabilities = model(val.x, submodels=True).softmax(-1).mean(2)  # [3, n, 4]
        combined = model(val.x)
        _, accuracy = trainer._evaluate(val, loss=False)
    torch.testing.assert_close(combined.exp(), probabilities, rtol=1e-5, atol=1e-6)
    predicted = probabilities.argmax(-1)
    expected = ((predicted == val.y) & val.mask).sum(1) / val.count
    torch.testing.assert_close(accuracy, expected)
    # combined in probability space, not by averaging the logits
    with torch.no_grad():
        mean_logits = model(val.x, submodels=True).mean(2).log_softmax(-1)
    assert not torch.allclose(combined, mean_logits, atol=1e-4)


# ------------------------------------------------------------------ 2. fits share nothing


@pytest.mark.parametrize("embedding", ["none", "piecewise_linear", "periodic"])
def test_a_cv_runs_fits_share_no_parameter(compose_cfg, embedding):
    cfg = compose_cfg(*SMALL_TABM, "cv=kfold", "cv.folds=3", f"embedding={embedding}", *LEAN)
    trainer = build(cfg)
    model = trainer.model
    xb, tb, mb, nb, full = _batch(trainer)
    trainer._loss(xb, tb, mb, nb, full)[0].backward()  # fit 0's loss alone
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if embedding != "none":
        assert any(name.startswith("embedding.") for name in names)
    for name, p in model.named_parameters():
        assert p.shape[0] == 3, name  # every parameter is per fit ...
        assert p.grad is not None, name
        assert not p.grad[1:].any(), f"{name}: fit 0's loss reaches fits 1-2"  # ... and own
    reached = [name for name, p in model.named_parameters() if p.grad[0].any()]
    assert len(reached) == len(names), sorted(set(names) - set(reached))


# ------------------------------------------------------------------ 3. bins: training rows only


def _poisoned(prepared, value: float):
    """``prepared`` with every fit's validation and held-out rows replaced by ``value``."""
    members = [
        MemberData(d.x_train, d.y_train, torch.full_like(d.x_val, value), d.y_val)
        for d in prepared.members
    ]
    tests = [(torch.full_like(x, value), y) for x, y in prepared.tests]
    return replace(prepared, members=members, tests=tests)


def _edges(recipe, prepared) -> torch.Tensor:
    return build_trainer(recipe, prepared).model.embedding.inner.edges


@pytest.mark.parametrize("bins", ["quantile", "tree"])
def test_bins_are_fitted_on_each_fits_training_rows_only(compose_cfg, bins):
    cfg = compose_cfg(
        "cv=kfold", "cv.folds=3", *SMALL_PLE, f"embedding.bins={bins}", "data.n_rows=400", *LEAN
    )
    recipe = Recipe.of(cfg)
    table = load_data(recipe.data)
    plan = plan_for(recipe, table)
    clean = prepare(recipe, table, plan, torch.device("cpu"))
    edges = _edges(recipe, clean)
    assert edges.shape[:2] == (3, 20)
    assert not torch.equal(edges[0], edges[1])  # each fit its own bins
    for value in (float("nan"), 1e9):
        torch.testing.assert_close(_edges(recipe, _poisoned(clean, value)), edges, rtol=0, atol=0)
        direct = fit_bins(recipe, _poisoned(clean, value), [0, 1, 2])
        for m in range(3):
            for f in range(20):
                n = len(direct[m][f])
                assert torch.equal(direct[m][f], edges[m, f, :n])

    # The raw table: fit 0's validation and held-out rows made huge (their labels flipped)
    # change neither fit 0's scaling nor its bins; fits 1 and 2 train on some of those rows.
    held = np.concatenate([plan[0].val, plan[0].test])
    frame = table.frame.copy()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    frame.loc[frame.index[held], numeric] = frame[numeric].iloc[held] * 1000 + 1e6
    labels = table.labels.copy()
    labels[held] = table.schema.num_classes - 1 - labels[held]
    poisoned = prepare(
        recipe, replace(table, frame=frame, labels=labels), plan, torch.device("cpu")
    )
    redone = _edges(recipe, poisoned)
    assert torch.equal(redone[0], edges[0])
    assert not torch.equal(redone[1], edges[1]) and not torch.equal(redone[2], edges[2])


# ------------------------------------------------------------------ 5. smoothing and weights


def _member_loss(trainer, out, tb, mb):
    return trainer._member_loss(out, tb, mb, mb.sum(1).to(out.dtype))


@pytest.mark.parametrize(
    ("overrides", "torch_kwargs"),
    [
        (("loss.class_weight=[1.0,2.5,0.5,4.0]",), {"weight": torch.tensor([1.0, 2.5, 0.5, 4.0])}),
        (("loss.label_smoothing=0.2",), {"label_smoothing": 0.2}),
        (("loss.class_weight=balanced",), None),  # the weights sklearn computes, below
    ],
    ids=["class_weight", "label_smoothing", "balanced"],
)
@pytest.mark.parametrize("model", ["mlp", "tabm"])
def test_the_member_loss_is_torchs_cross_entropy(compose_cfg, overrides, torch_kwargs, model):
    from sklearn.utils.class_weight import compute_class_weight

    tabm = SMALL_TABM if model == "tabm" else ()
    trainer = build(compose_cfg(*tabm, "model.dropout=0", *overrides, *LEAN))
    if torch_kwargs is None:
        y = trainer.members[0].y_train.numpy()
        weight = compute_class_weight("balanced", classes=np.arange(4), y=y)
        torch_kwargs = {"weight": torch.tensor(weight, dtype=torch.float32)}
    xb, tb, mb, nb, full = _batch(trainer, 64)
    with torch.no_grad():
        out = trainer.model(xb)  # [1, 64, 4]
        got = _member_loss(trainer, out, tb, mb)
        expected = F.cross_entropy(out[0], tb[0], **torch_kwargs)
        assert torch.allclose(got, expected.view(1), rtol=1e-6, atol=1e-7), (got, expected)
        if model == "tabm":  # what trains: the mean over submodels of torch's loss
            per_submodel = trainer.model(xb, submodels=True)
            each = [F.cross_entropy(per_submodel[0, :, i], tb[0], **torch_kwargs) for i in range(4)]
            loss = trainer._loss(xb, tb, mb, nb, full)
            torch.testing.assert_close(loss, torch.stack(each).mean().view(1))


def test_class_weights_with_label_smoothing_weigh_the_whole_row_by_its_class(compose_cfg):
    """With both, torch weighs each class's smoothing term by that class's weight; pricenet
    weighs the row's whole (smoothed) loss by the weight of the row's class:
    ``sum_r w[y_r] * ce_s(r) / sum_r w[y_r]``. The two differ (documented here)."""
    w = torch.tensor([1.0, 2.5, 0.5, 4.0])
    cfg = compose_cfg("loss.class_weight=[1.0,2.5,0.5,4.0]", "loss.label_smoothing=0.2", *LEAN)
    trainer = build(cfg)
    xb, tb, mb, _, _ = _batch(trainer, 64)
    with torch.no_grad():
        out = trainer.model(xb)
        got = _member_loss(trainer, out, tb, mb)
        rows = F.cross_entropy(out[0], tb[0], label_smoothing=0.2, reduction="none")
        ours = (w[tb[0]] * rows).sum() / w[tb[0]].sum()
        theirs = F.cross_entropy(out[0], tb[0], weight=w, label_smoothing=0.2)
    torch.testing.assert_close(got, ours.view(1))
    assert not torch.allclose(got, theirs.view(1), rtol=1e-4)


def test_balanced_class_weights_are_sklearns_per_fit(compose_cfg):
    from sklearn.utils.class_weight import compute_class_weight

    cfg = compose_cfg("cv=kfold", "cv.folds=3", "loss.class_weight=balanced", *LEAN)
    trainer = build(cfg)
    weights = trainer.class_weights
    assert weights.shape == (3, 4)
    for m, data in enumerate(trainer.members):
        y = data.y_train.numpy()
        expected = compute_class_weight("balanced", classes=np.arange(4), y=y)
        np.testing.assert_allclose(weights[m].numpy(), expected, rtol=1e-6)
    assert not torch.allclose(weights[0], weights[1]) or not torch.allclose(weights[1], weights[2])
    # and the loss uses each fit's own row of them
    xb, tb, mb, _, _ = _batch(trainer, 48)
    with torch.no_grad():
        out = trainer.model(xb)
        got = _member_loss(trainer, out, tb, mb)
    for m in range(3):
        expected = F.cross_entropy(out[m], tb[m], weight=weights[m])
        torch.testing.assert_close(got[m], expected)


# ------------------------------------------------------------------ 4. every new layer kind


# (model overrides, embedding overrides): each new layer kind once, with an MLP and a TabM
# behind the embeddings.
KINDS = {
    "tabm": (SMALL_TABM, ()),
    "mini": ((*SMALL_TABM, "model.arch=mini"), ()),
    "packed": ((*SMALL_TABM, "model.arch=packed"), ()),
    "mlp-ple-A": (("model.hidden=[32]",), (*SMALL_PLE, "embedding.version=A")),
    "tabm-ple-B-tree": (SMALL_TABM, (*SMALL_PLE, "embedding.version=B", "embedding.bins=tree")),
    "mlp-periodic": (
        ("model.hidden=[32]",),
        ("embedding=periodic", "embedding.n_frequencies=8", "embedding.d_embedding=4"),
    ),
    "mini-periodic-lite": (
        (*SMALL_TABM, "model.arch=mini"),
        ("embedding=periodic", "embedding.n_frequencies=8", "embedding.lite=true"),
    ),
}


def _accuracy(predictor: Predictor, frame: pd.DataFrame) -> float:
    probabilities = predictor.predict_proba(frame)
    predicted = np.asarray(predictor.class_labels)[probabilities.argmax(1)]
    return float((predicted == frame[predictor.label_name].to_numpy()).mean())


@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_kind_round_trips_through_best_pt_and_onnx(compose_cfg, tmp_path, kind):
    model, embedding = KINDS[kind]
    run_dir = tmp_path / "run"
    # uncalibrated: the Predictor's probabilities are the evaluated outputs' own
    metrics, frame = train(
        compose_cfg, run_dir, *model, *embedding, "trainer.calibrate=false", *LEAN
    )
    predictor = Predictor.from_checkpoint(run_dir)
    network = predictor.network
    assert isinstance(network, Network)
    if kind.startswith(("tabm", "mini", "packed")):
        assert network.submodels == 4
    assert (network.embedding is not None) == bool(embedding)
    assert metrics["test_acc"] > 0.3  # it learned something: the check below is not vacuous
    assert _accuracy(predictor, frame) == pytest.approx(metrics["test_acc"], abs=1e-9)
    probabilities = predictor.predict_proba(frame)
    y = frame[predictor.label_name].map(predictor.class_labels.index).to_numpy()
    nll = -np.log(probabilities[np.arange(len(y)), y]).mean()
    assert nll == pytest.approx(metrics["test_loss"], rel=1e-5)

    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from pricenet.export import INPUT, main, onnx_session, read_schema

    main([f"checkpoint={tmp_path / 'run'}", f"output={tmp_path / 'model.onnx'}"])
    path = tmp_path / "model.onnx"
    features = frame[read_schema(path).feature_names].to_numpy(dtype=np.float32)
    got = onnx_session(path).run(None, {INPUT: features})[0]
    expected = predictor.predict_proba(frame)
    assert got.shape == expected.shape == (len(frame), 4)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def tabm_run(tmp_path_factory):
    """One small TabM run with a piecewise-linear embedding (module-wide: crafted copies of
    its checkpoints and its attributions): its folder and its resolved config."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data.n_rows=300",
                "trainer.epochs=3",
                "trainer.device=cpu",
                *SMALL_TABM,
                *SMALL_PLE,
                *LEAN,
            ],
        )
    GlobalHydra.instance().clear()
    run_dir = tmp_path_factory.mktemp("tabm") / "run"
    run(cfg, run_dir)
    return run_dir, Recipe.of(cfg).config


def _network(key: str, value):
    def edit(payload: dict) -> None:
        payload["network"][key] = value

    return edit


def _tensor(key: str, change):
    def edit(payload: dict) -> None:
        payload["model"][key] = change(payload["model"][key].clone())

    return edit


def _nan_edge(edges: torch.Tensor) -> torch.Tensor:
    edges[0, 0, 1] = float("nan")
    return edges


def _embedding_kind(payload: dict) -> None:
    payload["network"]["embedding"]["kind"] = "fourier"


CRAFTED = {
    "arch": (_network("arch", "wide"), r"network\.arch: 'wide' is not one of mlp, tabm"),
    "k=0": (_network("k", 0), r"network\.k: 0 is not in 1\.\.256"),
    "k=10**6": (_network("k", 10**6), r"network\.k: 1000000 is not in 1\.\.256"),
    "k with mlp": (_network("arch", "mlp"), r"network\.k: 4 is not in 1\.\.256 \(1 for mlp\)"),
    "embedding kind": (_embedding_kind, r"network\.embedding\.kind: 'fourier' is not one of"),
    "edges decrease": (
        _tensor("embedding.inner.edges", lambda t: t.flip(-1)),
        r"edges\[0, 0\]: bin edges do not strictly increase",
    ),
    "edges NaN": (_tensor("embedding.inner.edges", _nan_edge), r"edges.*NaN"),
    "tabm weight shape": (
        _tensor("backbone.0.weight", lambda t: t[..., :-1]),
        r"model.*backbone\.0\.weight.*shape",
    ),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_tabm_checkpoints_are_refused_with_one_line(tabm_run, tmp_path, case):
    edit, message = CRAFTED[case]
    payload = load_checkpoint(tabm_run[0] / "best.pt")
    payload.pop("format_version")
    Predictor.from_checkpoint(save_checkpoint(tmp_path / "clean.pt", payload))  # loads as is
    edit(payload)
    path = save_checkpoint(tmp_path / "best.pt", payload)
    with pytest.raises(CheckpointError, match=message) as caught:
        Predictor.from_checkpoint(path)
    assert "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("case", ["edges decrease", "tabm weight shape"])
def test_a_crafted_tabm_last_pt_is_refused_by_resume(tabm_run, tmp_path, case):
    run_dir, config = tabm_run
    edit, message = CRAFTED[case]
    payload = load_checkpoint(run_dir / "last.pt")
    payload.pop("format_version")
    resume_state(save_checkpoint(tmp_path / "clean" / "last.pt", payload), config)  # as is: fine
    weights = payload["trainer"]["model"]
    edit({"model": weights})
    path = save_checkpoint(tmp_path / "last.pt", payload)
    with pytest.raises(CheckpointError, match=message) as caught:
        resume_state(path, config)
    assert "\n" not in str(caught.value), str(caught.value)


# ------------------------------------------------------------------ 6. bad input: one line


def _categorical_only(path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], 120),
            "size": rng.choice(["S", "M", "L"], 120),
        }
    )
    frame["label"] = (frame["color"] == "red").astype(int) + (frame["size"] == "L")
    frame.to_csv(path, index=False)


BAD = {
    "k=0": (("model=tabm", "model.k=0"), r"model\.k=0 is invalid"),
    "arch": (("model=tabm", "model.arch=wide"), r"model\.arch='?wide'? is invalid"),
    "n_bins=1": (("embedding=piecewise_linear", "embedding.n_bins=1"), r"embedding\.n_bins=1 is"),
    "smoothing": (("loss.label_smoothing=1.5",), r"loss\.label_smoothing=1\.5 is invalid"),
    "class_weight": (
        ("loss.class_weight=[1.0,2.0]",),
        r"loss\.class_weight: 2 weight\(s\) for the 4 classes of 'price_range' \(0, 1, 2, 3\)",
    ),
    "no numeric": (
        ("data=csv", "data.label=label", "embedding=periodic"),
        r"embedding=periodic: the table has no numeric feature to embed; use embedding=none",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line_and_exit_2(compose_cfg, tmp_path, capsys, case):
    overrides, message = BAD[case]
    if "data=csv" in overrides:
        _categorical_only(tmp_path / "colors.csv")
        overrides = (*overrides, f"data.path={tmp_path / 'colors.csv'}")
    cfg = compose_cfg(*overrides, *LEAN)
    assert_refused_before_the_run(cfg, tmp_path / "run", message, capsys)


# ------------------------------------------------------------------ 7. early stopping, resume

# Three folds of a TabM with piecewise-linear bins, deterministic; patience 2 on the validation
# loss stops the folds at epochs 9, 11 and 7 (best 7, 9, 5) of 12.
EARLY = (
    "trainer.device=cpu",
    "trainer.deterministic=true",
    "trainer.threads=1",
    "data.n_rows=240",
    "trainer.batch_size=16",
    *SMALL_TABM,
    *SMALL_PLE,
    "cv=kfold",
    "cv.folds=3",
    "trainer.patience=2",
    "monitor=val_loss",
    "optim.lr=0.01",
    *LEAN,
)


def test_a_tabm_cv_run_stops_early_and_resumes_to_the_same_result(compose_cfg, tmp_path):
    full, artifacts = run(compose_cfg(*EARLY, "trainer.epochs=12"), tmp_path / "full")
    members = full["members"]
    stopped = [m["epochs_run"] for m in members]
    assert all(m["stopped_early"] for m in members) and len(set(stopped)) == 3, members
    for name in ("metrics.csv", "last.pt", "best.pt"):
        assert artifacts[name].is_file(), name
    lines = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + max(stopped)  # a header, then one row per epoch any fold trained
    best = load_checkpoint(artifacts["best.pt"])
    assert best["epoch"] == [m["best_epoch"] for m in members]

    # the first run ends at epoch 8: one fold has stopped by then, the other two go on
    _, first = run(compose_cfg(*EARLY, "trainer.epochs=8"), tmp_path / "first")
    assert min(stopped) < 8 < max(stopped)
    resume = f"trainer.resume={first['last.pt']}"
    resumed, again = run(compose_cfg(*EARLY, "trainer.epochs=12", resume), tmp_path / "resumed")
    assert resumed == full
    for name in ("metrics.json", "metrics.csv"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "full" / name).read_text()
    restored = load_checkpoint(again["best.pt"])["model"]
    for key, value in best["model"].items():
        assert torch.equal(restored[key], value), key


# ------------------------------------------------------------------ 8. attributions

CAPTUM = ["integrated_gradients", "feature_ablation", "shapley_value_sampling"]


@pytest.mark.parametrize("method", CAPTUM)
def test_explain_features_runs_on_a_tabm_checkpoint(tabm_run, tmp_path, method, capsys):
    pytest.importorskip("captum")
    from pricenet.explain import main

    main(
        [
            "features",
            f"checkpoint={tabm_run[0]}",
            f"method={method}",
            f"out_dir={tmp_path}",
            "repeats=2",
            "steps=8",
            "samples=3",
        ]
    )
    assert "accuracy" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "features.csv")
    assert len(table) == 20  # every phone feature
    values = table.select_dtypes("number").to_numpy()
    assert values.size and np.isfinite(values).all()
    attributions = [c for c in table.columns if c.endswith("_abs_mean")]
    assert attributions and (table[attributions[0]] > 0).any(), table.columns
    assert (tmp_path / "features.png").is_file()


def test_fits_that_stop_early_leave_an_embeddings_column_positions_whole(compose_cfg, tmp_path):
    """Once some fits stop, the live ones train on their slice of every stored tensor; an
    embedding's column positions are not per fit, even when there are as many columns as
    fits (20 numeric phone features, 20 seeds here) and must not be sliced."""
    cfg = compose_cfg(
        *SMALL_PLE,
        "trainer.seeds=20",
        "trainer.patience=1",
        "trainer.epochs=12",
        "monitor=val_loss",
        "data.n_rows=200",
        "model.hidden=[8]",
        *LEAN,
    )
    metrics, _ = run(cfg, tmp_path / "run")
    stopped = {record["epochs_run"] for record in metrics["members"]}
    assert len(stopped) > 1  # fits stopped at different epochs: the packed step shrank
    assert metrics["seeds"]["members"] == 20 and metrics["seeds"]["diverged"] == 0


@pytest.mark.parametrize(
    "activations",
    [
        [{"name": "prelu", "args": {}}] * 2,
        [{"name": "relu", "args": {}}, {"name": "tanh", "args": {}}],
    ],
    ids=["learned", "mixed"],
)
def test_a_stored_tabm_with_an_activation_it_cannot_hold_is_refused(activations):
    """A TabM applies one stateless, noiseless activation: a crafted spec naming PReLU (or
    two different ones) is refused as data, before anything is built."""
    from pricenet.nn.spec import NetworkSpec, SpecError

    stored = {
        "members": 1,
        "in_features": 4,
        "hidden": [8, 8],
        "activations": [{"name": "relu", "args": {}}] * 2,
        "dropout": 0.0,
        "batch_norm": False,
        "head": "categorical",
        "num_classes": 3,
        "arch": "tabm",
        "k": 2,
    }
    assert NetworkSpec.from_dict(stored).k == 2
    with pytest.raises(SpecError, match="one stateless, noiseless activation"):
        NetworkSpec.from_dict({**stored, "activations": activations})
