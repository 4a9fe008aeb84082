"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two augmented views per image, a 2-layer projection head and the NT-Xent loss, all from lightly. The loss gathers
the projections of every rank (``gather_distributed``) with gradients flowing, so the step below is the same on
one device or many.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.twoview import TwoViewMethod
from sslcluster.ssl.optim import OptimConfig


class SimCLR(TwoViewMethod):
    """Args: see :class:`SSLMethod`; ``temperature`` of NT-Xent; projection head sizes (``hidden_dim=None``: the
    backbone's feature width ``backbone.out_dim``, as SimCLR's head, whose hidden layer is as wide as its input:
    2048 on ResNet-50, Chen et al. 2020, and the reference code's ``ProjectionHead``); ``head_batch_norm``:
    BatchNorm in the head (off only for exact distributed-equivalence checks, where per-rank BN statistics differ
    from the global ones; or use ``trainer.sync_batchnorm=true``)."""

    method_name = "simclr"
    concatenate_views = True  # SimCLR's reference code concatenates the views (BatchNorm over all 2B images)

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, temperature: float = 0.5, hidden_dim: int | None = None,
                 output_dim: int = 128, gather_distributed: bool = True, head_batch_norm: bool = True) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if batch_size_per_device < 2:
            raise SSLClusterError(f"data.batch_size={batch_size_per_device}: NT-Xent needs at least 2 images per "
                                  "batch (the other images are the negatives)")
        if temperature <= 0:
            raise SSLClusterError(f"method.temperature={temperature} must be positive")
        if hidden_dim is not None and hidden_dim < 1:
            raise SSLClusterError(f"method.module.hidden_dim={hidden_dim} must be positive (or null: the backbone's "
                                  "feature width)")
        hidden = backbone.out_dim if hidden_dim is None else hidden_dim
        self.projection_head = SimCLRProjectionHead(backbone.out_dim, hidden, output_dim,
                                                    batch_norm=head_batch_norm)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
