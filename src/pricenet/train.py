"""``python -m pricenet.train [overrides]``: train one model (or a sweep with --multirun)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import pricenet.config.config  # noqa: F401  (registers the config schemas)
from pricenet.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="pkg://pricenet.conf", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """Train, evaluate and save the model ``cfg`` describes; return the validation metric."""
    from pricenet.run.pipeline import run_job

    return run_job(cfg)


if __name__ == "__main__":
    main()
