"""What every method shares: the backbone, the optimiser and schedule, and the run config in checkpoints.

A method subclass adds its head(s) and loss and implements ``training_step`` and ``project``; nothing here knows
the data set. Methods with a momentum (EMA) encoder add :class:`sslcluster.ssl.methods.momentum.MomentumEncoder`.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from sslcluster.ssl.optim import OptimConfig, apply_weight_decay_schedule, build_optimizer, build_scheduler
from sslcluster.ssl.schedule import StepPlan, plan_steps

CONFIG_KEY = "sslcluster_config"
PLAN_KEY = "sslcluster_step_plan"


class SSLMethod(pl.LightningModule):
    """Base of the methods.

    Args:
        backbone: maps images (B, C, H, W) to features (B, backbone.out_dim).
        optim: optimiser settings; the rate is scaled by the global batch size.
        batch_size_per_device: images per device and step, for the learning-rate scaling.
    """

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256) -> None:
        super().__init__()
        self.backbone = backbone
        self.optim_cfg = optim if isinstance(optim, OptimConfig) else OptimConfig(**dict(optim or {}))
        self.batch_size_per_device = batch_size_per_device
        #: the resolved run config (plain dict), saved into every checkpoint so export can rebuild the backbone.
        self.run_config: dict[str, Any] | None = None
        #: the optimiser steps of the fit and its learning-rate curve (set by ``configure_optimizers``; restored
        #: from a checkpoint on resume, so a time budget's fixed length survives an interruption)
        self.step_plan: StepPlan = StepPlan(total=None, warmup=0, steps_per_epoch=1)
        self._resumed_plan: StepPlan | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D) of images (B, C, H, W)."""
        return self.backbone(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The method's own embedding (B, P) of images (B, C, H, W): the output of the head the loss acts on
        (``export.features=projection``, ``clustering.features=projection``). Every method defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define project()")

    def compile_targets(self) -> list[nn.Module]:
        """The modules ``trainer.speed.compile`` compiles: those that carry nearly all the compute."""
        return [self.backbone]

    def global_batch_size(self) -> int:
        """Images per optimiser step over all devices (per device x devices x accumulation)."""
        accumulate = getattr(self.trainer, "accumulate_grad_batches", 1) or 1
        return self.batch_size_per_device * self.trainer.world_size * accumulate

    def configure_optimizers(self):
        """The optimiser with the learning rate scaled to the global batch, and its per-step schedule."""
        optimizer = build_optimizer(self, self.optim_cfg, self.global_batch_size())
        if self._resumed_plan is not None:
            self.step_plan = self._resumed_plan
        else:
            self.step_plan = plan_steps(self.trainer, self.optim_cfg.warmup_epochs, self.optim_cfg.warmup_max_fraction)
        scheduler = build_scheduler(optimizer, self.step_plan)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def schedule_steps(self) -> int:
        """Optimiser steps the run's schedules (learning rate, momentum, weight decay) span."""
        return self.step_plan.span()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The weight-decay schedule (``optim.weight_decay_end``) for this step; nothing without one."""
        apply_weight_decay_schedule(optimizer, self.optim_cfg, self.global_step, self.schedule_steps())

    def host_scalars(self) -> dict[str, float]:
        """Python-number curves, logged on the logger's steps by :class:`~sslcluster.ssl.callbacks.HostScalars`
        (not with ``self.log``, which would copy them to the device every step, a synchronisation on CUDA)."""
        group = self.trainer.optimizers[0].param_groups[0]
        scalars = {"train/lr": float(group["lr"])}
        if self.optim_cfg.weight_decay_end is not None:
            scalars["train/weight_decay"] = float(group["weight_decay"])
        return scalars

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the resolved run config into the checkpoint."""
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        checkpoint[PLAN_KEY] = self.step_plan.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep a resumed run's step plan (checkpoints of older versions have none: it is planned afresh)."""
        state = checkpoint.get(PLAN_KEY)
        self._resumed_plan = StepPlan(**state) if isinstance(state, dict) else None
