"""Two static pictures of a study in the sweep folder: its history and its parameter importances."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

HISTORY = "optimization_history.png"
IMPORTANCES = "param_importances.png"


def _save(axes: object, path: Path) -> Path:
    """Write the figure of ``axes`` with pricenet's one PNG writer (atomic: workers may finish
    at the same moment), then close it (Optuna draws with pyplot, which keeps it open)."""
    import matplotlib.pyplot as plt

    from pricenet.run.plots import save_png

    figure = axes.figure  # type: ignore[attr-defined]
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    try:
        return save_png(figure, path, dpi=100)
    finally:
        plt.close(figure)


def write_plots(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """``optimization_history.png`` (with one complete trial) and ``param_importances.png``
    (Optuna's evaluator needs two); fewer complete trials write fewer pictures, not an error."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    out_dir = Path(out_dir)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            written.append(_save(plot_optimization_history(study), out_dir / HISTORY))
        if len(complete) < 2:
            log.info("no %s: %d complete trial(s), it needs 2", IMPORTANCES, len(complete))
            return written
        try:
            written.append(_save(plot_param_importances(study), out_dir / IMPORTANCES))
        except (RuntimeError, ValueError) as err:  # e.g. every trial drew the same values
            log.info("no %s: %s", IMPORTANCES, err)
    return written
