"""The cv/seeds summary: mean, std and a Student-t interval, checked against scipy by hand."""

from __future__ import annotations

import math

import pytest

from pricenet.run.summary import headline, interval, summarize


def test_interval_matches_the_t_formula():
    values = [0.95, 0.97, 0.96, 0.99, 0.98]
    low, high = interval(values)
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, df=4)
    assert (low, high) == pytest.approx((mean - half, mean + half))


def test_one_value_has_a_zero_width_interval():
    assert interval([0.9]) == (0.9, 0.9)


def test_summary_skips_missing_values_and_counts_the_rest():
    fits = [{"acc": 0.9, "f1": None}, {"acc": 0.8, "f1": None}]
    summary = summarize(fits, ["acc", "f1"])
    assert summary["f1"] is None
    assert summary["acc"]["mean"] == pytest.approx(0.85)
    assert summary["acc"]["std"] == pytest.approx(math.sqrt(0.005))
    assert summary["acc"]["n"] == 2


def test_headline_is_in_percent():
    summary = summarize([{"acc": 0.97}, {"acc": 0.975}, {"acc": 0.98}], ["acc"])
    assert headline("cv 3x1", summary).startswith("cv 3x1: acc 97.5 ± 0.5 (95% CI 96.3–98.7)")
