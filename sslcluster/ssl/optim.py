"""Optimisers and learning-rate schedules shared by every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler

from sslcluster.errors import SSLClusterError

OPTIMIZERS = {"sgd": torch.optim.SGD, "lars": LARS, "adamw": torch.optim.AdamW}


@dataclass
class OptimConfig:
    """``lr`` is the rate for ``base_batch_size``; the rate used is ``lr * global_batch / base_batch_size``
    (linear scaling, Goyal et al. 2017)."""

    name: str = "sgd"
    lr: float = 0.06
    base_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 10.0


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    return cfg.lr * global_batch / cfg.base_batch_size


def build_optimizer(params: Iterable, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise SSLClusterError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    lr = scaled_lr(cfg, global_batch)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return OPTIMIZERS[cfg.name](params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                    steps_per_epoch: int) -> CosineWarmupScheduler:
    """Per-step linear warm-up then cosine decay (lightly's scheduler), over ``total_steps`` steps."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return CosineWarmupScheduler(optimizer, warmup_epochs=min(warmup, max(total_steps - 1, 0)),
                                 max_epochs=max(total_steps, 1))
