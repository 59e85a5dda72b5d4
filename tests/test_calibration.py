"""Temperature scaling recovers a known temperature; ECE and NLL match hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_reporting import assert_png

from pricenet.nn.heads import CategoricalHead, CoralHead, OrdinalHead, RegressionHead
from pricenet.run.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    plot_reliability,
    reliability_bins,
)


def categorical_sample(n: int, temperature: float, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z * temperature (over-confident)."""
    generator = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(n, 4, generator=generator)
    y = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
    return logits * temperature, y


def ordinal_sample(n: int, temperature: float, seed: int = 0):
    """Labels with P(y > k) = sigmoid(s + b_k); the model reports (s + b_k) * temperature."""
    generator = torch.Generator().manual_seed(seed)
    score = 2.0 * torch.randn(n, 1, generator=generator)
    logits = score + torch.tensor([1.5, 0.0, -1.5])
    u = torch.rand(n, 1, generator=generator)
    y = (u < torch.sigmoid(logits)).sum(dim=1)  # monotone thresholds: the right distribution
    return logits * temperature, y


@pytest.mark.parametrize("true_t", [0.5, 3.0])
def test_temperature_recovers_a_known_value_for_the_categorical_head(true_t):
    outputs, y = categorical_sample(20_000, true_t)
    fitted = fit_temperature(outputs, y, CategoricalHead(4))
    assert fitted == pytest.approx(true_t, rel=0.05)


@pytest.mark.parametrize("head", [OrdinalHead(4), CoralHead(4)])
def test_temperature_recovers_a_known_value_for_ordinal_heads(head):
    outputs, y = ordinal_sample(20_000, 2.5)
    fitted = fit_temperature(outputs, y, head)
    assert fitted == pytest.approx(2.5, rel=0.05)
    report = calibration_report(outputs, y, head, fitted)
    assert report["nll_after"] < report["nll_before"] - 0.05
    assert report["ece_after"] < report["ece_before"] / 2


def test_scaling_lowers_ece_and_nll_of_an_overconfident_model():
    outputs, y = categorical_sample(20_000, 3.0, seed=1)
    head = CategoricalHead(4)
    report = calibration_report(outputs, y, head, fit_temperature(outputs, y, head))
    assert report["ece_before"] > 0.1
    assert report["ece_after"] < 0.02
    assert report["nll_after"] < report["nll_before"] - 0.2


def test_regression_heads_are_not_applicable():
    outputs = torch.tensor([[0.2], [1.7], [3.4]])
    y = torch.tensor([0, 2, 3])
    assert fit_temperature(outputs, y, RegressionHead(4)) == 1.0
    assert calibration_report(outputs, y, RegressionHead(4), 1.0)["applicable"] is False


def test_a_calibrated_model_keeps_t_near_1_and_t_1_changes_nothing():
    outputs, y = categorical_sample(20_000, 1.0, seed=2)
    head = CategoricalHead(4)
    assert fit_temperature(outputs, y, head) == pytest.approx(1.0, abs=0.05)
    report = calibration_report(outputs, y, head, 1.0)
    assert report["ece_after"] == report["ece_before"]
    assert report["nll_after"] == report["nll_before"]


def test_ece_and_nll_match_a_hand_computation():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    # 3 bins: confidences 0.9, 0.8, 0.7 in (2/3, 1] with accuracy 2/3 and mean confidence
    # 0.8; 0.6 in (1/3, 2/3] with accuracy 1. ECE = 3/4 * |2/3 - 0.8| + 1/4 * |1 - 0.6|
    assert expected_calibration_error(probs, y, bins=3) == pytest.approx(0.2)
    table = reliability_bins(probs, y, bins=3)
    assert table["counts"].tolist() == [0, 1, 3]
    assert math.isnan(table["accuracy"][0])
    nll = -(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.7)) / 4
    assert negative_log_likelihood(probs, y) == pytest.approx(nll)
    assert negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(
        -math.log(1e-12)
    )


def test_reliability_diagram_is_a_png(tmp_path):
    outputs, y = categorical_sample(5_000, 3.0, seed=3)
    head = CategoricalHead(4)
    t = fit_temperature(outputs, y, head)
    before = head.probabilities(outputs)
    after = head.probabilities(outputs / t)
    path = plot_reliability(before, after, y, tmp_path / "reliability.png")
    assert_png(path, min_size=(800, 400))
