"""RotNet (Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting Image Rotations").

Every image of the batch (or a fixed fraction of it) is shown at 0, 90, 180 and 270 degrees, and a small head on
the backbone features predicts which of the four rotations it sees (4-way cross-entropy). Feeding all four
rotations of an image in the same batch is the paper's best setting (section 3.1).

``project(x)`` returns the head's penultimate activations (B, hidden_dim): the rotation logits only say how an
image is turned, so they are a poor embedding; the hidden layer is the last one that still describes content.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.base import SSLMethod
from sslcluster.ssl.optim import OptimConfig

NUM_ROTATIONS = 4


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of each image.

    Args:
        x: images (B, C, H, W), square (H == W).

    Returns:
        ``(images (4B, C, H, W), labels (4B,))``: block r holds every image turned by r x 90 degrees
        counter-clockwise, with label r.
    """
    if x.shape[-1] != x.shape[-2]:
        raise SSLClusterError(f"rotation needs square images, got {x.shape[-2]}x{x.shape[-1]}")
    rotated = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(NUM_ROTATIONS)])
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        rotated = rotated.contiguous(memory_format=torch.channels_last)  # keep the layout cuDNN was given
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class RotationHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear(4): backbone features (B, D) -> rotation logits (B, 4)."""

    def __init__(self, input_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(input_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                                    nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden_dim, NUM_ROTATIONS)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D) -> rotation logits (B, 4)."""
        return self.classifier(self.hidden(h))


class Rotation(SSLMethod):
    """Args: see :class:`SSLMethod`; ``hidden_dim`` of the head; ``subset`` in (0, 1]: the fraction of each
    batch's images (the first ``ceil(subset * B)``; the loader shuffles) that get the rotation task."""

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, hidden_dim: int = 512, subset: float = 1.0) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if not 0.0 < subset <= 1.0:
            raise SSLClusterError(f"method.module.subset={subset} must be in (0, 1]")
        self.subset = subset
        self.head = RotationHead(backbone.out_dim, hidden_dim)
        self.criterion = nn.CrossEntropyLoss()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Head's penultimate activations (B, hidden_dim) of images (B, C, H, W)."""
        return self.head.hidden(self.backbone(x))

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation logits (B, 4) of images (B, C, H, W)."""
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[Sequence[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Rotation-prediction loss on the first ``ceil(subset * B)`` images of view 0 (B, C, H, W) -> scalar loss."""
        views, _ = batch
        x = views[0]
        n = max(1, math.ceil(self.subset * x.shape[0]))
        rotated, labels = rotate_batch(x[:n])
        logits = self.rotation_logits(rotated)
        loss = self.criterion(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/rotation_acc", acc, on_step=False, on_epoch=True, batch_size=n)
        return loss
