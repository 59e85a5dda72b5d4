"""The Hydra plugin class: ``hydra/sweeper=pricenet_optuna``.

Kept free of optuna imports (Hydra imports this module at every start to find plugins): the
work is done in ``_search``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

USAGE_EXIT_CODE = 2


class PricenetOptunaSweeper(Sweeper):
    """Runs the trials an Optuna study still needs, through Hydra's configured launcher."""

    def __init__(self, **settings: Any) -> None:
        # The settings are read from the composed config in setup (typed, interpolated).
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: Sequence[str]) -> None:
        """Top the study up to ``hydra.sweeper.n_trials``; a bad setting is one error line."""
        from ._search import Search
        from ._study import SweepConfigError

        assert self.config is not None, "setup() first"
        try:
            Search(self.config, self.launcher).run(list(arguments))
        except SweepConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)
