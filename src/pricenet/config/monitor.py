"""The monitored metric: its name and which direction is better.

One definition for everything that compares runs or epochs: the best-weights and
early-stopping callbacks, the scheduler's plateau, the leaderboard's ranking, the sweeper's
direction. A metric whose name ends in ``loss`` is better lower; any other (accuracies,
F1s) is better higher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Monitor:
    """A metric by name (``val_acc``, ``val_loss``, ``cv_acc``, ...) and its direction."""

    name: str

    @property
    def higher_is_better(self) -> bool:
        return not self.name.endswith("loss")

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's word for it."""
        return "maximize" if self.higher_is_better else "minimize"

    def key(self, value: float) -> float:
        """``value`` turned so that higher is always better (for sorting and comparing)."""
        return value if self.higher_is_better else -value

    def epoch_score(self, loss: float, acc: float) -> list[float]:
        """An epoch's score, compared as a list (higher is better): an accuracy monitor
        breaks ties by the lower loss; a loss monitor is the negated loss."""
        return [acc, -loss] if self.higher_is_better else [-loss]
