"""On the shared real data (skipped when absent): the recommended recipe vs the tutorial's."""

from __future__ import annotations

import pytest

from pricenet.run.pipeline import run


@pytest.fixture
def on_real(compose_cfg, real_csv, tmp_path):
    def _run(*overrides: str) -> dict:
        cfg = compose_cfg(
            "data=csv", f"data.path={real_csv}", "report.plots=false", *overrides, shrink=False
        )
        metrics, _ = run(cfg, tmp_path / overrides[0].replace("=", "_"))
        return metrics

    return _run


def test_recommended_reaches_96_percent_and_the_tutorial_fails(on_real):
    recommended = on_real("experiment=recommended", "report.tensorboard=false")
    tutorial = on_real("experiment=tutorial", "report.tensorboard=false")
    assert recommended["test_acc"] >= 0.96
    assert tutorial["test_acc"] <= 0.5  # chance is 0.25: the tutorial's network learns nothing
    assert recommended["test"]["confusion_matrix"][0][3] == 0  # never a cheap phone as premium
