"""Progress on the console, metrics.csv, TensorBoard event files and the run's PNG plots."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import assert_png

from pricenet.engine.reporting import tensorboard_name
from pricenet.run.pipeline import run
from pricenet.run.plots import CONFUSION_PNG, CURVES_PNG, LR_PNG, ema

TAGS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "acc/train": "train_acc",
    "acc/val": "val_acc",
    "lr": "lr",
}


class FakeTerminal(io.StringIO):
    """Captured text that claims to be a terminal, so the bar draws itself in place."""

    def isatty(self) -> bool:
        return True


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.fixture
def finished_run(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "trainer.epochs=4", "scheduler=step", "scheduler.step_size=2", "optim.lr=0.001"
    )
    metrics, artifacts = run(cfg, tmp_path / "run")
    return tmp_path / "run", metrics, artifacts


def test_plots_are_valid_images(finished_run):
    run_dir, _, artifacts = finished_run
    for name in (CURVES_PNG, CONFUSION_PNG, LR_PNG):
        assert artifacts[name] == run_dir / name
        assert_png(run_dir / name)


def test_no_plots_when_turned_off(compose_cfg, tmp_path):
    _, artifacts = run(compose_cfg("report.plots=false"), tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.png"))
    assert CURVES_PNG not in artifacts


def test_tensorboard_has_one_value_per_epoch_for_every_tag(finished_run):
    run_dir, metrics, _ = finished_run
    scalars = read_scalars(run_dir / "tensorboard" / "default")
    assert set(scalars) == set(TAGS)
    for tag, key in TAGS.items():
        steps, values = zip(*scalars[tag], strict=True)
        assert steps == (1, 2, 3, 4), tag
        assert values == pytest.approx(metrics["history"][key], rel=1e-6), tag
    # the lr is the one each epoch trained with: step_size=2, gamma=0.5
    assert [v for _, v in scalars["lr"]] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])


def test_metrics_csv_has_one_row_per_epoch(finished_run):
    run_dir, metrics, _ = finished_run
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["val_acc"]) for r in rows] == pytest.approx(metrics["history"]["val_acc"])


def test_resumed_run_logs_every_epoch_to_tensorboard(compose_cfg, tmp_path):
    run(compose_cfg("trainer.epochs=2", "report.plots=false"), tmp_path / "first")
    cfg = compose_cfg("trainer.epochs=4", f"trainer.resume={tmp_path / 'first'}")
    metrics, _ = run(cfg, tmp_path / "second")
    scalars = read_scalars(tmp_path / "second" / "tensorboard" / "default")
    assert [step for step, _ in scalars["loss/train"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["loss/train"]] == pytest.approx(
        metrics["history"]["train_loss"], rel=1e-6
    )


def test_tensorboard_can_be_turned_off(compose_cfg, tmp_path):
    run(compose_cfg("report.tensorboard=false", "report.plots=false"), tmp_path / "run")
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("", "default"),
        ("optim=sgd,optim.lr=0.1", "optim=sgd,optim.lr=0.1"),
        ("paths.root_dir=/tmp/x", "paths.root_dir=_tmp_x"),
    ],
)
def test_tensorboard_name_stays_inside_the_run_folder(overrides, expected):
    assert tensorboard_name(overrides) == expected


def test_bar_redraws_one_line_on_a_terminal(compose_cfg, tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    cfg = compose_cfg(
        "trainer.epochs=3", "optim.lr=0.001", "report.plots=false", "report.tensorboard=false"
    )
    run(cfg, tmp_path / "run")
    text = terminal.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    assert text.count("\n") == 1, "the bar must stay on one line and end it once"
    last_frame = text.rstrip("\n").rsplit("\r", 1)[-1]
    for field in ("epoch 3/3", "[##########]", "train_loss", "val_acc", "lr 0.001"):
        assert field in last_frame


@pytest.mark.parametrize(("progress", "multirun"), [("auto", True), ("none", False)])
def test_quiet_modes_print_nothing_per_epoch(compose_cfg, tmp_path, progress, multirun, capsys):
    cfg = compose_cfg(f"report.progress={progress}", "report.plots=false")
    run(cfg, tmp_path / "run", multirun=multirun)
    captured = capsys.readouterr()
    assert "epoch" not in captured.out + captured.err


def test_plain_lines_when_not_a_terminal(compose_cfg, tmp_path, capsys):
    run(
        compose_cfg("trainer.epochs=20", "trainer.patience=null", "report.plots=false"),
        tmp_path / "run",
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == [f"{e}/20" for e in range(2, 21, 2)]
    assert "\r" not in err


def test_ema_is_bias_corrected():
    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])
    assert ema([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])
    assert ema([2.0, 2.0], 0.5, bias_correction=False) == pytest.approx([1.0, 1.5])
    assert ema([4.0, 0.0, 8.0], 0.0) == pytest.approx([4.0, 0.0, 8.0])


@pytest.mark.slow
def test_console_prints_each_line_once(tmp_path):
    result = run_cli("trainer.epochs=3", "data.n_rows=200", "trainer.device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    assert console.count("best epoch") == 1
    # pricenet's own records (a library's warnings, e.g. matplotlib's font fallbacks, may repeat)
    log_lines = [line for line in result.stdout.splitlines() if "][pricenet][" in line]
    assert log_lines and len(log_lines) == len(set(log_lines))
    # progress goes to the terminal only: stderr, never stdout nor train.log
    assert "epoch 3/3" in result.stderr and "epoch 3/3" not in result.stdout
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    train_log = (run_dir / "train.log").read_text()
    assert train_log.count("best epoch") == 1 and "epoch 3/3" not in train_log


@pytest.mark.slow
def test_multirun_prints_one_line_per_job_and_names_tensorboard_runs(tmp_path):
    result = run_cli(
        "--multirun",
        "optim=adam,sgd",
        "trainer.epochs=2",
        "data.n_rows=200",
        "trainer.device=cpu",
        "report.plots=False",  # as Hydra writes it in the job's override_dirname
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    names = [
        f"data.n_rows=200,optim={optim},report.plots=False,trainer.device=cpu,trainer.epochs=2"
        for optim in ("adam", "sgd")
    ]
    summaries = [line for line in console.splitlines() if "best epoch" in line]
    assert len(summaries) == 2
    for name, summary in zip(names, summaries, strict=True):
        assert f"{name}: best epoch" in summary
    assert "model (" not in console and "train_loss" not in console
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    for job, name in enumerate(names):
        assert json.loads((sweep / str(job) / "metrics.json").read_text())["status"] == "done"
        assert list((sweep / str(job) / "tensorboard" / name).glob("events.out.tfevents.*"))


def test_a_png_is_written_whole_or_not_at_all(tmp_path):
    """Every figure goes through plots.save_png: a drawing that fails half-way leaves the old
    picture, where writing straight to the path (as before) left half a file."""
    from matplotlib.figure import Figure

    from pricenet.atomic import WriteError
    from pricenet.run.plots import save_png

    fig = Figure(figsize=(5, 4), dpi=100)
    fig.subplots().plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "curves.png")
    assert_png(path, min_size=(500, 400))
    whole = path.read_bytes()

    def half_then_fail(target, **kwargs):
        handle = open(target, "wb") if isinstance(target, str | Path) else target  # noqa: SIM115
        handle.write(whole[:100])
        handle.flush()
        raise OSError(28, "No space left on device")

    fig.savefig = half_then_fail
    with pytest.raises(OSError):
        fig.savefig(str(tmp_path / "direct.png"))  # the old way: straight to the path
    assert (tmp_path / "direct.png").read_bytes() == whole[:100]
    with pytest.raises(WriteError, match="No space left on device"):
        save_png(fig, path)
    assert path.read_bytes() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "direct.png"]
