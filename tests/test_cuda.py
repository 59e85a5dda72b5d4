"""The trainer on CUDA: skipped where no GPU is present (CI), run on a lent GPU machine."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import train

from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_auto_picks_cuda_and_a_cuda_checkpoint_predicts_on_cpu(compose_cfg, tmp_path):
    metrics, frame = train(compose_cfg, tmp_path / "run", "trainer.device=auto")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"].startswith("cuda")
    predictor = Predictor.from_checkpoint(tmp_path / "run", device="cpu")
    predicted = predictor.predict(frame.drop(columns=["price_range"]))
    assert (predicted["price_range"] == frame["price_range"]).mean() == metrics["test_acc"]


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "coral", "mse"])
def test_deterministic_cuda_runs_are_identical(compose_cfg, tmp_path, loss):
    overrides = ("trainer.device=cuda", "trainer.deterministic=true", f"loss={loss}")
    first, _ = run(compose_cfg(*overrides), tmp_path / "a")
    second, _ = run(compose_cfg(*overrides), tmp_path / "b")
    assert first == second


def test_cuda_resume_equals_an_uninterrupted_run(compose_cfg, tmp_path):
    common = ("trainer.device=cuda", "trainer.deterministic=true", "report.plots=false")
    straight, _ = run(compose_cfg(*common, "trainer.epochs=4"), tmp_path / "straight")
    run(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "first")
    resume = f"trainer.resume={tmp_path / 'first'}"
    resumed, _ = run(compose_cfg(*common, "trainer.epochs=4", resume), tmp_path / "resumed")
    assert resumed == straight
