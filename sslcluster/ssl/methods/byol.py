"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

An online network (backbone + projection head + prediction head) predicts the projection of the other view made by
a target network, a momentum (EMA) copy of the online backbone and projection head whose momentum rises from
``momentum`` to ``momentum_end`` on a cosine (the paper's tau_base -> 1; :class:`MomentumEncoder`). The loss is
lightly's ``NegativeCosineSimilarity``, symmetrised over the two views as lightly's BYOL does; the paper's
``2 - 2 cos`` is an affine function of it (same gradients up to a factor). Heads and loss from lightly.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.momentum import MomentumEncoder
from sslcluster.ssl.methods.twoview import two_views
from sslcluster.ssl.optim import OptimConfig


class BYOL(MomentumEncoder):
    """Args: see :class:`SSLMethod`; projection / prediction head sizes; ``momentum`` and ``momentum_end`` of the
    target network's EMA (cosine from the first to the second over the run; ``momentum_end=None``: constant)."""

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, hidden_dim: int = 4096, output_dim: int = 256,
                 momentum: float = 0.99, momentum_end: float | None = 1.0) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if batch_size_per_device < 2:
            raise SSLClusterError(f"data.batch_size={batch_size_per_device}: BYOL's heads use BatchNorm, which "
                                  "needs at least 2 images per batch")
        self.projection_head = BYOLProjectionHead(backbone.out_dim, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.init_momentum(["backbone", "projection_head"], momentum, momentum_end)
        self.criterion = NegativeCosineSimilarity()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Online projections (B, output_dim) of images (B, C, H, W) (the prediction head's input)."""
        return self.projection_head(self.backbone(x))

    @torch.no_grad()
    def project_momentum(self, x: torch.Tensor) -> torch.Tensor:
        """Target projections (B, output_dim) of images (B, C, H, W), without gradients."""
        return self.projection_head_momentum(self.backbone_momentum(x))

    def training_step(self, batch: tuple[Sequence[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        """BYOL loss of one batch: two views (B, C, H, W) each -> scalar loss (each view's prediction against the
        target projection of the other view). Each view goes through each network on its own (BatchNorm statistics
        per view), as BYOL's code and lightly's benchmarks do."""
        x0, x1 = two_views(batch, "byol")
        self.step_momentum()
        p0, p1 = self.prediction_head(self.project(x0)), self.prediction_head(self.project(x1))
        z0, z1 = self.project_momentum(x0), self.project_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0])
        return loss
