"""Optimisers and learning-rate schedules shared by every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from torch import nn
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
    """The learning rate scaled linearly to ``global_batch``: ``lr * global_batch / base_batch_size``."""
    return cfg.lr * global_batch / cfg.base_batch_size


def lars_param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for LARS as in SimCLR (Chen et al. 2020, appendix B.1): normalisation-layer parameters and
    biases in a group with weight decay 0, which lightly's LARS also leaves without the trust-ratio adaptation
    (it adapts only groups with weight decay); everything else decayed. The split is lightly's
    ``get_weight_decay_parameters``."""
    decay, no_decay = get_weight_decay_parameters([module])
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(params: Iterable | nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.name`` over ``params`` (a module, or an iterable of parameters or groups). LARS on a
    module gets :func:`lars_param_groups`; SGD and AdamW decay every parameter (lightly's CIFAR-10 benchmark)."""
    if cfg.name not in OPTIMIZERS:
        raise SSLClusterError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    lr = scaled_lr(cfg, global_batch)
    if isinstance(params, nn.Module):
        params = lars_param_groups(params, cfg.weight_decay) if cfg.name == "lars" else params.parameters()
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return OPTIMIZERS[cfg.name](params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                    steps_per_epoch: int) -> CosineWarmupScheduler:
    """Per-step linear warm-up then cosine decay (lightly's scheduler), over ``total_steps`` steps."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return CosineWarmupScheduler(optimizer, warmup_epochs=min(warmup, max(total_steps - 1, 0)),
                                 max_epochs=max(total_steps, 1))
