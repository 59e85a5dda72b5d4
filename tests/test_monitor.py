"""The Monitor: one definition of which direction is better."""

from __future__ import annotations

import pytest

from pricenet.config.monitor import Monitor


@pytest.mark.parametrize(
    ("name", "higher", "direction"),
    [
        ("val_acc", True, "maximize"),
        ("cv_acc", True, "maximize"),
        ("test_macro_f1", True, "maximize"),
        ("val_loss", False, "minimize"),
        ("test_loss", False, "minimize"),
    ],
)
def test_the_direction_follows_the_name(name, higher, direction):
    monitor = Monitor(name)
    assert monitor.higher_is_better is higher
    assert monitor.direction == direction
    better, worse = (0.9, 0.8) if higher else (0.1, 0.2)
    assert monitor.key(better) > monitor.key(worse)


def test_an_accuracy_tie_is_broken_by_the_lower_loss():
    acc = Monitor("val_acc")
    assert acc.epoch_score(0.3, 0.9) > acc.epoch_score(0.4, 0.9)
    assert acc.epoch_score(0.9, 0.91) > acc.epoch_score(0.1, 0.9)
    assert Monitor("val_loss").epoch_score(0.3, 0.1) > Monitor("val_loss").epoch_score(0.4, 0.99)
