"""Config checks: each bad value is a ConfigError naming the key and what is allowed.

Typos and wrong types fail while composing (the typed schemas, Hydra's own message); values of
the right type that make no sense fail in ``validate``; everything before any data is read.
"""

from __future__ import annotations

import pytest
import torch

from pricenet.config import validate
from pricenet.errors import ConfigError, DataError, PricenetError
from pricenet.pipeline import check_factories, run
from pricenet.seed import resolve_device


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
        (["+model.width=3"], "model.width=3 is invalid: unknown key; allowed: _target_, hidden"),
        (["optim.weight_decay=-1"], "optim.weight_decay=-1 is invalid: must be a number >= 0"),
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
