"""Build a packed Trainer from a composed config and per-member rows (tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pricenet.engine.callbacks import BestWeights, EarlyStopping, SchedulerStep
from pricenet.engine.loop import MemberData, Trainer
from pricenet.nn.model import build_model
from pricenet.nn.spec import network_spec


def member_rows(n_train: int, n_val: int, seed: int, features: int = 20) -> MemberData:
    """Rows with a learnable ordinal label: a noisy linear score cut into 4 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, features, generator=g)
    w = torch.linspace(-1.0, 1.0, features)
    score = x @ w + 0.3 * torch.randn(n_train + n_val, generator=g)
    y = torch.bucketize(score, torch.tensor([-1.5, 0.0, 1.5]))
    return MemberData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def make_trainer(
    cfg: DictConfig, members: Sequence[MemberData], seeds: Sequence[int], **overrides
) -> Trainer:
    """Model, optimizer and scheduler of ``cfg`` for ``len(members)`` packed members, with the
    policy callbacks (best weights, early stopping, the scheduler); ``callbacks`` adds more."""
    head = instantiate(cfg.loss.head)
    criterion = instantiate(cfg.loss.criterion)
    spec = network_spec(cfg, members[0].x_train.shape[1], head.num_classes, len(members))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    model = build_model(spec, generators, cfg.init, cfg.model.get("layer_inits"))
    optimizer = instantiate(cfg.optim, _convert_="all")(model.parameters())
    scheduler = instantiate(cfg.scheduler, _convert_="all")(optimizer)
    t = cfg.trainer
    patience = overrides.pop("patience", t.patience)
    extra = overrides.pop("callbacks", [])
    settings = {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "grad_clip": t.grad_clip,
        "l1": t.l1,
        "monitor": cfg.monitor,
        **overrides,
    }
    policy = [BestWeights(), EarlyStopping(patience=patience), SchedulerStep(scheduler=scheduler)]
    return Trainer(
        model,
        head,
        criterion,
        optimizer,
        members,
        generators=generators,
        callbacks=[*policy, *extra],
        **settings,
    )
