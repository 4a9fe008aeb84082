"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

A student (backbone + lightly's ``DINOProjectionHead``) matches the sharpened, centred output distribution of a
teacher, a momentum (EMA) copy of the student whose momentum rises on a cosine from ``momentum`` to
``momentum_end`` (:class:`MomentumEncoder`). Multi-crop: the first two views are global crops, the rest local
crops (smaller; lightly's ``DINOTransform``); the teacher sees the global crops only, the student every crop, and
each student crop is scored against each teacher crop of another view (lightly's ``DINOLoss``).

From lightly, unchanged: the loss with its teacher-temperature warm-up (linear from ``warmup_teacher_temp`` to
``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs) and its centre (an EMA of the teacher's batch mean,
all-reduced over the ranks, so every rank holds the same centre); the head's ``cancel_last_layer_gradients``
(the last layer frozen for the first ``freeze_last_layer`` epochs). The weight-decay schedule (0.04 -> 0.4 in the
paper) and the undecayed norm and bias parameters are the shared optimiser's (``optim.weight_decay_end``,
``optim.no_decay_norm_bias``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.momentum import MomentumEncoder
from sslcluster.ssl.optim import OptimConfig


class DINO(MomentumEncoder):
    """Args: see :class:`SSLMethod`; head sizes (``output_dim``: the K prototypes), ``batch_norm`` in the head (for
    convolutional backbones), ``norm_last_layer``, ``freeze_last_layer`` (epochs); the loss's temperatures, warm-up
    epochs and ``center_momentum``; the teacher's ``momentum`` -> ``momentum_end``; ``clip_grad``: each student
    parameter's gradient norm clipped to it before every optimiser step (None or 0: off)."""

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 output_dim: int = 65536, batch_norm: bool = False, norm_last_layer: bool = True,
                 freeze_last_layer: int = 1, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 warmup_teacher_temp: float = 0.04, warmup_teacher_temp_epochs: int = 0,
                 center_momentum: float = 0.9, momentum: float = 0.996, momentum_end: float | None = 1.0,
                 clip_grad: float | None = 3.0) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        for key, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp),
                           ("warmup_teacher_temp", warmup_teacher_temp)):
            if value <= 0:
                raise SSLClusterError(f"method.module.{key}={value} must be positive")
        if not 0.0 <= center_momentum <= 1.0:
            raise SSLClusterError(f"method.module.center_momentum={center_momentum} must be in [0, 1]")
        if clip_grad is not None and clip_grad < 0:
            raise SSLClusterError(f"method.module.clip_grad={clip_grad} must be non-negative (0 or null: off)")
        self.clip_grad = clip_grad or None
        def head() -> DINOProjectionHead:
            return DINOProjectionHead(backbone.out_dim, hidden_dim, bottleneck_dim, output_dim, batch_norm=batch_norm,
                                      freeze_last_layer=freeze_last_layer, norm_last_layer=norm_last_layer)

        self.projection_head = head()
        # the teacher's head is built afresh (weight_norm modules cannot be deep-copied), then given the weights
        self.init_momentum(["backbone", "projection_head"], momentum, momentum_end,
                           fresh={"projection_head": head()})
        self.criterion = DINOLoss(output_dim=output_dim, warmup_teacher_temp=warmup_teacher_temp,
                                  teacher_temp=teacher_temp, warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
                                  student_temp=student_temp, center_momentum=center_momentum)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Student head outputs (B, output_dim) of images (B, C, H, W): the logits over the K prototypes."""
        return self.projection_head(self.backbone(x))

    @torch.no_grad()
    def project_teacher(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher head outputs (B, output_dim) of images (B, C, H, W), without gradients."""
        return self.projection_head_momentum(self.backbone_momentum(x))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The base class's weight-decay schedule, then DINO's gradient clipping: each student parameter's gradient
        scaled to norm ``clip_grad`` where it is larger (DINO's ``utils.clip_gradients``, per parameter, not the
        global norm Lightning's ``gradient_clip_val`` clips; torch's ``clip_grad_norm_`` on one parameter at a
        time). Lightning calls this after unscaling mixed-precision gradients and after the last micro-batch of an
        accumulation window, as DINO clips the unscaled gradient of each step."""
        super().on_before_optimizer_step(optimizer)
        if self.clip_grad is None:
            return
        for p in self.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, self.clip_grad)

    def on_after_backward(self) -> None:
        """Drop the head's last-layer gradients during the first ``freeze_last_layer`` epochs (lightly's head)."""
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)

    def training_step(self, batch: tuple[Sequence[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        """DINO loss of one batch: 2 global views (B, C, H, W) then any number of local views (B, C, h, w) ->
        scalar loss."""
        views, _ = batch
        if len(views) < 2:
            raise SSLClusterError(f"method=dino needs two global views per image; the augmentation gives "
                                  f"{len(views)}")
        self.step_momentum()
        global_views = torch.cat(list(views[:2]))
        teacher_out = list(self.project_teacher(global_views).chunk(2))
        student_out = list(self.project(global_views).chunk(2))
        if len(views) > 2:  # the local crops share one size: one pass for all of them
            student_out += list(self.project(torch.cat(list(views[2:]))).chunk(len(views) - 2))
        loss = self.criterion(teacher_out, student_out, epoch=self.current_epoch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=views[0].shape[0])
        return loss
