"""What the user sees when a run cannot start or fails: one line, a status, no lost work."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli
from hydra.utils import instantiate

from pricenet.checkpoints.checkpoint import load_checkpoint
from pricenet.errors import ConfigError, DataError, cause_of, exit_on_user_error, first_line
from pricenet.run.pipeline import run
from pricenet.tables import make_synthetic

LEAN = [
    "report.tensorboard=false",
    "report.plots=false",
    "report.progress=none",
    "trainer.threads=1",
    "trainer.device=cpu",
]
# sgd on mse with an lr that grows tenfold each epoch: a few good epochs, then a NaN loss
DIVERGES = [
    "loss=mse",
    "optim=sgd",
    "optim.lr=0.01",
    "scheduler=exponential",
    "scheduler.gamma=10",
    "trainer.epochs=8",
    "data.n_rows=200",
    "trainer.checkpoint_interval_s=0",  # last.pt after every good epoch
]


@pytest.mark.slow
def test_bad_csv_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "train.csv"
    frame = make_synthetic(40, seed=1).to_frame()
    frame["ram"] = frame["ram"].astype(str)
    frame.loc[2, "ram"] = "lots"
    frame.to_csv(path, index=False)
    result = run_cli("data=csv", f"data.path={path}", *LEAN, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: column 'ram', line 4: 'lots' is not a number"
    ]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_bad_config_exits_2_with_one_line(tmp_path):
    result = run_cli("optim.lr=-0.1", *LEAN, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: optim.lr=-0.1 is invalid: must be a number > 0"]


@pytest.mark.parametrize("flag", ["HYDRA_FULL_ERROR", "PRICENET_DEBUG"])
def test_traceback_only_when_asked_for(tmp_path, monkeypatch, capsys, flag):
    missing = tmp_path / "absent.csv"
    # instantiate wraps the DataError in its own exception: the user still gets one line
    load = exit_on_user_error(
        lambda: instantiate({"_target_": "pricenet.tables.sources.csv", "path": str(missing)})
    )
    with pytest.raises(SystemExit) as exited:
        load()
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {missing}: file not found\n"

    monkeypatch.setenv(flag, "1")
    with pytest.raises(Exception) as raised:
        load()
    assert isinstance(raised.value.__cause__ or raised.value, DataError)


@pytest.mark.slow
def test_divergence_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_cli(*DIVERGES, *LEAN, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()
    match = re.fullmatch(r"error: training diverged at epoch (\d+): train loss is \w+ .*", line)
    assert match, line
    epoch = int(match.group(1))
    assert epoch >= 2  # there was a good epoch to keep

    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["epochs_run"] == epoch - 1
    assert f"epoch {epoch}" in metrics["error"]
    assert load_checkpoint(tmp_path / "run/last.pt")["epoch"] == epoch - 1
    best = load_checkpoint(tmp_path / "run/best.pt")
    assert best["epoch"] == metrics["best_epoch"] <= epoch - 1


@pytest.mark.slow
def test_divergence_in_a_sweep_is_a_failed_job(tmp_path):
    result = run_cli(
        "--multirun",
        "loss=mse",
        "optim=sgd",
        "optim.lr=0.01,1000",
        "trainer.epochs=2",
        "data.n_rows=200",
        *LEAN,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    status = {
        job.name: json.loads((job / "metrics.json").read_text())["status"]
        for job in sweep.iterdir()
        if (job / "metrics.json").exists()
    }
    assert status == {"0": "done", "1": "failed"}
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert "training diverged at epoch 1" in failed["error"]


def test_run_refuses_a_folder_holding_an_earlier_run(compose_cfg, tmp_path):
    cfg = compose_cfg(*LEAN, "trainer.epochs=1", "data.n_rows=120")
    _, artifacts = run(cfg, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ConfigError, match=r"already holds an earlier run \(metrics\.json, last"):
        run(cfg, tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before

    # a killed run (last.pt but no metrics.json) is protected too
    artifacts["metrics.json"].unlink()
    with pytest.raises(ConfigError, match=r"already holds an earlier run \(last\.pt, best\.pt\)"):
        run(cfg, tmp_path / "run")


def test_first_line_quotes_the_first_non_blank_line_or_the_type():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError(""), "refused") == "refused"


def test_cause_of_finds_the_wrapped_exception_once_even_in_a_loop():
    inner = DataError("x.csv: no rows")
    try:
        try:
            raise inner
        except DataError as err:
            raise RuntimeError("instantiate failed") from err
    except RuntimeError as outer:
        assert cause_of(outer, DataError) is inner
        assert cause_of(outer, OSError) is None
    looped = ValueError("a")
    looped.__context__ = TypeError("b")
    looped.__context__.__context__ = looped  # a cycle in the chain ends the walk
    assert cause_of(looped, OSError) is None


def test_json_value_makes_numpy_scalars_and_non_finite_floats_strict_json():
    import numpy as np

    from pricenet.atomic import json_value

    value = {"a": np.int64(3), "b": (np.float32(0.5), float("nan")), "c": [np.bool_(True)]}
    plain = json_value(value)
    assert plain == {"a": 3, "b": [0.5, None], "c": [True]}
    assert type(plain["a"]) is int
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
