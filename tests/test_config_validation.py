"""Config checks: each bad value is a ConfigError naming the key and what is allowed.

Typos and wrong types fail while composing (the typed schemas, Hydra's own message); values of
the right type that make no sense fail in ``validate``; everything before any data is read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
import torch
from conftest import run_cli

from pricenet.config.checks import check_factories
from pricenet.config.config import check_config, validate
from pricenet.config.seed import resolve_device
from pricenet.errors import MAX_LINE, ConfigError, DataError, PricenetError, Problems
from pricenet.run.pipeline import run


def chain_text(err: BaseException) -> str:
    """The messages of ``err`` and of every exception it was raised from."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.epoch=3", "trainer.epoch"),
        ("optim.lrr=0.1", "optim.lrr"),
        ("learning_rate=0.1", "learning_rate"),
        ("trainer.epochs=abc", "trainer.epochs"),
        ("trainer.epochs=1.5", "trainer.epochs"),
        ("trainer.batch_size=[8]", "trainer.batch_size"),
        ("model.dropout=high", "model.dropout"),
        ("model.hidden=[a,b]", "model.hidden"),
        ("model.hidden=[1.5]", "model.hidden"),
        ("trainer.deterministic=maybe", "trainer.deterministic"),
    ],
)
def test_unknown_key_or_wrong_type_fails_at_composition(compose_cfg, override, key):
    with pytest.raises(Exception) as caught:
        compose_cfg(override)
    text = chain_text(caught.value)
    assert f"'{key}'" in text or f"full_key: {key}" in text, text
    assert not isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=0"], "optim.lr=0 is invalid: must be a number > 0"),
        (["optim=sgd", "optim.lr=-0.5"], "optim.lr=-0.5 is invalid: must be a number > 0"),
        (["optim.lr=fast"], "optim.lr='fast' is invalid: must be a number > 0"),
        (["model.dropout=1.0"], "model.dropout=1.0 is invalid: must be in [0, 1)"),
        (["model.dropout=-0.1"], "model.dropout=-0.1 is invalid: must be in [0, 1)"),
        (["trainer.batch_size=0"], "trainer.batch_size=0 is invalid: must be an integer >= 1"),
        (["trainer.epochs=0"], "trainer.epochs=0 is invalid: must be an integer >= 1"),
        (["trainer.epochs=-3"], "trainer.epochs=-3 is invalid: must be an integer >= 1"),
        (
            ["trainer.device=tpu"],
            "trainer.device='tpu' is invalid: must be one of auto, cpu, cuda or cuda:N",
        ),
        (["trainer.device=cuda:x"], "trainer.device='cuda:x' is invalid: must be one of"),
        (
            ["model.hidden=[64,0]"],
            "model.hidden[1]=0 is invalid: hidden sizes must be positive integers",
        ),
        (["model.hidden=[-8]"], "model.hidden[0]=-8 is invalid: hidden sizes must be positive"),
        (
            ["scheduler=multistep", "scheduler.milestones=[20,10]"],
            "scheduler.milestones=[20, 10] is invalid: must be a list of strictly increasing "
            "positive epochs",
        ),
        (
            ["scheduler=multistep", "scheduler.milestones=[5,5]"],
            "scheduler.milestones=[5, 5] is invalid",
        ),
        (["scheduler=multistep", "scheduler.milestones=[0,5]"], "scheduler.milestones=[0, 5]"),
        (["scheduler=multistep", "scheduler.milestones=30"], "scheduler.milestones=30 is invalid"),
        (["+trainer.epoch=3"], "trainer.epoch=3 is invalid: unknown key; allowed: epochs,"),
        (["+model.width=3"], "model.width=3 is invalid: unknown key; allowed: hidden, dropout"),
        (
            ["optim.weight_decay=-1"],
            "optim.weight_decay=-1 is invalid: must be a finite number >= 0",
        ),
        (["data.val_size=1.0"], "data.val_size=1.0 is invalid: must be in [0, 1)"),
        (["trainer.patience=0"], "trainer.patience=0 is invalid: must be >= 1, or null"),
    ],
)
def test_bad_value_names_key_and_what_is_allowed(compose_cfg, overrides, message):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.betas=[1.5,0.9]"], "optim (torch.optim.Adam): ValueError: Invalid beta param"),
        (["optim=sgd", "optim.momentum=-1"], "optim (torch.optim.SGD): ValueError: Invalid mom"),
        (["+optim.betaz=0.5"], "optim (torch.optim.Adam): TypeError:"),
        (
            ["scheduler=plateau", "scheduler.factor=2.0"],
            "scheduler (torch.optim.lr_scheduler.ReduceLROnPlateau): ValueError: Factor should",
        ),
        (["optim._target_=torch.optim.Nope"], "optim (torch.optim.Nope): "),
    ],
)
def test_arguments_torch_rejects_fail_before_training(compose_cfg, overrides, message):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    with pytest.raises(ConfigError) as caught:
        check_factories(cfg)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_cuda_without_a_gpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"trainer.device='cuda' was requested but no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index_beyond_the_gpus_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"trainer.device='cuda:3': there is no GPU 3"):
        resolve_device("cuda:3")


@pytest.mark.parametrize(
    "bad",
    [["optim.lr=-1"], ["trainer.device=cuda"], ["optim.betas=[1.5,0.9]"], ["trainer.resume=nope"]],
    ids=["value", "device", "factory", "resume"],
)
def test_config_is_checked_before_data_is_read(compose_cfg, tmp_path, monkeypatch, bad):
    """The CSV does not exist: a config problem must be reported first, and no run folder made."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg("data=csv", f"data.path={tmp_path / 'absent.csv'}", *bad)
    with pytest.raises(PricenetError) as caught:
        run(cfg, tmp_path / "run")
    assert not isinstance(caught.value, DataError), caught.value
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.seed=-1"],
            "trainer.seed=-1 is invalid: must be an integer with 0 <= seed < 2**63",
        ),
        (["trainer.seed=18446744073709551616"], "trainer.seed=18446744073709551616 is invalid"),
        (["trainer.seed=9223372036854775808"], "trainer.seed=9223372036854775808 is invalid"),
        (["data.seed=-2"], "data.seed=-2 is invalid: must be an integer with 0 <= seed < 2**63"),
        (["optim.weight_decay=inf"], "optim.weight_decay=inf is invalid: must be a finite number"),
        (["optim.weight_decay=nan"], "optim.weight_decay=nan is invalid: must be a finite number"),
        (["data.noise=-0.5"], "data.noise=-0.5 is invalid: must be a finite number >= 0"),
        (
            ["model.batch_norm=true", "trainer.batch_size=1"],
            "model.batch_norm=true needs trainer.batch_size >= 2 (got 1)",
        ),
    ],
)
def test_values_that_gave_tracebacks_are_config_errors(compose_cfg, overrides, message):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert str(caught.value).startswith(message), caught.value


def test_the_largest_seed_and_batch_norm_without_hidden_layers_are_accepted(compose_cfg):
    validate(compose_cfg("trainer.seed=9223372036854775807"))
    validate(compose_cfg("model=linear", "model.batch_norm=true", "trainer.batch_size=1"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+activation.foo=1"], "activation (torch.nn.ReLU): unexpected argument 'foo'"),
        (
            ["+loss.criterion.foo=1"],
            "loss.criterion (torch.nn.CrossEntropyLoss): unexpected argument 'foo'",
        ),
        (
            ["+loss.head.foo=1"],
            "loss.head (pricenet.nn.heads.CategoricalHead): unexpected argument",
        ),
        (
            ["+init.weight.foo=1"],
            "init.weight (torch.nn.init.kaiming_normal_): unexpected argument 'foo'",
        ),
        (["+init.bias.foo=1"], "init.bias (torch.nn.init.zeros_): unexpected argument 'foo'"),
        (
            ["+init.weight.nonlinearity=bad"],
            "init.weight (torch.nn.init.kaiming_normal_): ValueError: Unsupported nonlinearity",
        ),
        (
            ["init.weight._partial_=false"],
            "init.weight (torch.nn.init.kaiming_normal_): TypeError: ",
        ),
        (
            ["+data.source.foo=1"],
            "data.source (pricenet.tables.sources.synthetic): unexpected argument",
        ),
        (
            ["model.hidden=[8,8]", "+model.layer_activations.1={_target_:torch.nn.ELU,foo:1}"],
            "model.layer_activations.1 (torch.nn.ELU): unexpected argument 'foo'",
        ),
        (
            ["+model.layer_inits.1={weight:{_target_:torch.nn.init.zeros_,_partial_:true,foo:2}}"],
            "model.layer_inits.1.weight (torch.nn.init.zeros_): unexpected argument 'foo'",
        ),
        (["activation._target_=torch.nn.Nope"], "activation (torch.nn.Nope): "),
        (
            ["loss.head._target_=torch.nn.ReLU"],
            "loss.head (torch.nn.ReLU): TypeError: builds a ReLU, which is not a pricenet head",
        ),
    ],
)
def test_every_target_node_is_checked_up_front(compose_cfg, overrides, message):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    with pytest.raises(ConfigError) as caught:
        check_factories(cfg)
    assert str(caught.value).startswith(message), caught.value
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "bad", ["+activation.foo=1", "+loss.criterion.foo=1", "+loss.head.foo=1", "+init.weight.foo=1"]
)
def test_a_bad_target_argument_touches_no_run_folder_and_no_data(
    compose_cfg, tmp_path, monkeypatch, bad
):
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg("data=csv", f"data.path={tmp_path / 'absent.csv'}", bad)
    with pytest.raises(ConfigError, match=r"unexpected argument 'foo'"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_shipped_choice_passes_the_target_checks(compose_cfg):
    from importlib.resources import files

    for group in ("activation", "init", "loss", "model", "data", "embedding"):
        for path in (files("pricenet.conf") / group).iterdir():
            if not path.name.endswith(".yaml"):
                continue  # data/schema/ is a nested group
            choice = path.name.removesuffix(".yaml")
            small = "model.width=4" if choice == "tabm" else "model.hidden=[4]"
            cfg = compose_cfg(f"{group}={choice}", small)
            check_factories(cfg)


def test_help_lists_no_schema_as_a_choice_of_a_group(compose_cfg):
    """``--help`` lists each group's options from the config loader: no ``*_schema`` among them."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    compose_cfg()  # clears Hydra
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = ("data", "model", "trainer", "embedding")
        options = {g: loader.get_group_options(g) for g in groups}
    assert options == {
        "data": ["csv", "synthetic"],
        "model": ["linear", "mlp", "tabm", "tutorial"],
        "trainer": ["default"],
        "embedding": ["none", "periodic", "piecewise_linear"],
    }


@pytest.mark.slow
def test_help_command_shows_the_groups_without_schemas(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data: csv, synthetic\n" in result.stdout
    assert "trainer: default\n" in result.stdout
    assert "_schema" not in result.stdout


@contextlib.contextmanager
def keep_logging() -> Iterator[None]:
    """Undo the logging set-up Hydra's main does (handlers on captured streams, levels)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level, propagate, disabled in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled


def test_train_entry_point_in_process_reports_a_bad_argument_in_one_line(
    tmp_path, monkeypatch, capsys
):
    """``pricenet.train.main`` (no subprocess): one ``error:`` line, exit 2, no model built."""
    from hydra.core.global_hydra import GlobalHydra

    from pricenet.train import main

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("PRICENET_DEBUG", raising=False)
    monkeypatch.setenv("PRICENET_ROOT", str(tmp_path))
    run_dir = tmp_path / "run"
    monkeypatch.setattr(
        "sys.argv", ["pricenet-train", "+activation.foo=1", f"hydra.run.dir={run_dir}"]
    )
    GlobalHydra.instance().clear()
    with keep_logging(), pytest.raises(SystemExit) as caught:
        main()
    GlobalHydra.instance().clear()
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "error: activation (torch.nn.ReLU): unexpected argument 'foo'; allowed: inplace"
    )
    assert not (run_dir / "config.yaml").exists()


def test_every_problem_is_reported_in_one_line(compose_cfg):
    """Three bad values, each of another check (value, plan, device), in one error: the old
    first-problem-only validator named only ``optim.lr``."""
    cfg = compose_cfg(
        "optim.lr=-1", "trainer.batch_size=0", "cv=kfold", "cv.folds=1", "trainer.device=tpu"
    )
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    text = str(caught.value)
    assert text.startswith("4 problems in the config: "), text
    for problem in (
        "trainer.batch_size=0 is invalid: must be an integer >= 1",
        "trainer.device='tpu' is invalid: must be one of auto, cpu, cuda or cuda:N",
        "optim.lr=-1 is invalid: must be a number > 0",
        "cv.folds=1 is invalid: must be an integer >= 2 (or cv=none)",
    ):
        assert problem in text, text
    assert len(caught.value.problems) == 4
    assert "\n" not in text


def test_value_and_target_problems_are_gathered_together(compose_cfg):
    cfg = compose_cfg("model.dropout=2.0", "+activation.foo=1", "optim.betas=[1.5,0.9]")
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert caught.value.problems == [
        "model.dropout=2.0 is invalid: must be in [0, 1)",
        "activation (torch.nn.ReLU): unexpected argument 'foo'; allowed: inplace",
        "optim (torch.optim.Adam): ValueError: Invalid beta parameter at index 0: 1.5",
    ]


def test_a_single_problem_keeps_its_own_message(compose_cfg):
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg("data.val_size=1.0"))  # not also "val_size + test_size"
    assert str(caught.value) == "data.val_size=1.0 is invalid: must be in [0, 1)"


def test_a_long_list_of_problems_is_cut_to_one_line_with_a_count():
    problems = Problems()
    for i in range(200):
        problems.invalid(f"model.hidden[{i}]", -i, "hidden sizes must be positive integers")
    text = problems.message()
    assert len(text) <= MAX_LINE
    assert text.startswith("200 problems in the config: model.hidden[0]=0 is invalid")
    listed = text.count(" is invalid")
    assert text.endswith(f"; ... and {200 - listed} more")


def test_the_cli_prints_every_problem_and_makes_no_run_folder(tmp_path):
    proc = run_cli("optim.lr=-1", "model.dropout=1.5", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: 2 problems in the config: model.dropout=1.5 is invalid: must be in [0, 1); "
        "optim.lr=-1 is invalid: must be a number > 0"
    ]
    assert not (tmp_path / "run").exists()
