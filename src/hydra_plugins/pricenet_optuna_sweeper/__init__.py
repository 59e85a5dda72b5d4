"""pricenet's Hydra sweeper on current Optuna: one study, many workers, pruning.

Hydra finds it because it lives in the ``hydra_plugins`` namespace package; select it with
``hydra/sweeper=pricenet_optuna`` (``hparams_search=optuna`` does). Modules whose name starts
with ``_`` import optuna; Hydra's plugin scan skips them, so a plain run never pays for it.
"""
