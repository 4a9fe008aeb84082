"""Optimisers, learning-rate and weight-decay schedules shared by every method.

Parameter groups are named (lightly's ``update_param_groups`` finds them by name): ``default`` (decayed) and, when
normalisation and bias parameters are left undecayed, ``no_weight_decay``. A weight-decay schedule (DINO, Caron et
al. 2021: cosine from 0.04 to 0.4) acts on the ``default`` group only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from lightly.utils.optim import update_param_groups
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.schedule import StepPlan

OPTIMIZERS = {"sgd": torch.optim.SGD, "lars": LARS, "adamw": torch.optim.AdamW}


@dataclass
class OptimConfig:
    """``lr`` is the rate for ``base_batch_size``; the rate used is ``lr * global_batch / base_batch_size``
    (linear scaling, Goyal et al. 2017). ``weight_decay_end``: if set, the weight decay follows a cosine from
    ``weight_decay`` to it over the run (DINO); ``no_decay_norm_bias``: normalisation and bias parameters in a
    group without weight decay (always so for LARS)."""

    name: str = "sgd"
    lr: float = 0.06
    base_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 10.0
    #: the warm-up is at most this share of the run's optimiser steps, so a run cut short by ``max_steps`` or a time
    #: budget keeps its cosine phase: 0.1 as SimCLR's 10 warm-up epochs of 100 (Chen et al. 2020, B.1)
    warmup_max_fraction: float = 0.1
    weight_decay_end: float | None = None
    no_decay_norm_bias: bool = False


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The learning rate scaled linearly to ``global_batch``: ``lr * global_batch / base_batch_size``."""
    return cfg.lr * global_batch / cfg.base_batch_size


def lars_param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for LARS as in SimCLR (Chen et al. 2020, appendix B.1): normalisation-layer parameters and
    biases in a group with weight decay 0, which lightly's LARS also leaves without the trust-ratio adaptation
    (it adapts only groups with weight decay); everything else decayed. The split is lightly's
    ``get_weight_decay_parameters``."""
    decay, no_decay = get_weight_decay_parameters([module])
    return [{"name": "default", "params": decay, "weight_decay": weight_decay},
            {"name": "no_weight_decay", "params": no_decay, "weight_decay": 0.0}]


def build_optimizer(params: Iterable | nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.name`` over ``params`` (a module, or an iterable of parameters or groups). A module
    gets :func:`lars_param_groups` with LARS or ``no_decay_norm_bias``; otherwise SGD and AdamW decay every
    parameter (lightly's CIFAR-10 benchmark), in one group named ``default``."""
    if cfg.name not in OPTIMIZERS:
        raise SSLClusterError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    lr = scaled_lr(cfg, global_batch)
    if isinstance(params, nn.Module):
        if cfg.name == "lars" or cfg.no_decay_norm_bias:
            params = lars_param_groups(params, cfg.weight_decay)
        else:
            params = [{"name": "default", "params": list(params.parameters())}]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return OPTIMIZERS[cfg.name](params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, plan: StepPlan) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up then cosine decay to the floor (lightly's ``cosine_warmup_schedule``) over the
    steps of ``plan``, read at every step (a time budget fixes the plan's length after the first steps). A plain
    function, so the scheduler's state dict stays plain values; the plan itself is saved by the method."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: plan.factor(step))


def weight_decay_at(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """The weight decay of the ``default`` group at ``step`` of ``total_steps``: ``cfg.weight_decay`` without a
    schedule, else lightly's ``cosine_schedule`` from it to ``cfg.weight_decay_end`` (DINO, Caron et al. 2021)."""
    if cfg.weight_decay_end is None:
        return cfg.weight_decay
    return float(cosine_schedule(min(step, total_steps), max(total_steps, 1), cfg.weight_decay, cfg.weight_decay_end))


def apply_weight_decay_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int,
                                total_steps: int) -> None:
    """Set the ``default`` group's weight decay for ``step`` (no-op without ``weight_decay_end``); the
    ``no_weight_decay`` group stays at 0."""
    if cfg.weight_decay_end is not None:
        update_param_groups(optimizer, updates=[{"name": "default",
                                                 "weight_decay": weight_decay_at(cfg, step, total_steps)}])
