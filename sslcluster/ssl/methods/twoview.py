"""The training step shared by the methods whose loss compares two views' projections (SimCLR, Barlow Twins,
VICReg), and the check of a batch's views every two-view method makes.

How the two views go through the network decides the BatchNorm statistics: BYOL, Barlow Twins and VICReg forward
each view on its own (BatchNorm statistics per view), as their reference code and lightly's benchmarks do; SimCLR's
reference code concatenates the views into one batch (``concatenate_views``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.base import SSLMethod


def two_views(batch: tuple[Sequence[torch.Tensor], torch.Tensor], method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two views (B, C, H, W) each of a batch ``(views, labels)``; the labels are never read."""
    views, _ = batch
    if len(views) < 2:
        raise SSLClusterError(f"method={method} needs two views per image; the augmentation gives {len(views)}")
    return views[0], views[1]


class TwoViewMethod(SSLMethod):
    """A backbone and ``projection_head`` trained by ``criterion(z0, z1)`` of the two views' projections.

    Subclasses set ``projection_head`` and ``criterion`` in ``__init__``, and the class attributes ``method_name``
    (for messages) and ``concatenate_views`` (one pass over both views, BatchNorm statistics over 2B images; else
    one pass per view)."""

    method_name: str = "two-view"
    concatenate_views: bool = False
    projection_head: nn.Module
    criterion: nn.Module

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (B, output_dim) of images (B, C, H, W)."""
        return self.projection_head(self.backbone(x))

    def project_views(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections (B, output_dim) of each view (B, C, H, W): one pass per view, or one over both."""
        if self.concatenate_views:
            z0, z1 = self.project(torch.cat([x0, x1])).chunk(2)
            return z0, z1
        return self.project(x0), self.project(x1)

    def training_step(self, batch: tuple[Sequence[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The loss of one batch: two views (B, C, H, W) each -> scalar loss."""
        x0, x1 = two_views(batch, self.method_name)
        z0, z1 = self.project_views(x0, x1)
        loss = self.criterion(z0, z1)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0])
        return loss
