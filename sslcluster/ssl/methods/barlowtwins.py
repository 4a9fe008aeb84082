"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

Two views through one network (backbone + 3-layer projector, lightly's ``BarlowTwinsProjectionHead``); the loss
(lightly's ``BarlowTwinsLoss``) drives the cross-correlation matrix of the two views' batch-standardised
projections to the identity: ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``.

Distributed (``gather_distributed``): every rank standardises its own projections and the cross-correlation
matrices are averaged over the ranks (an all-reduce with gradients), as lightly does. That is the exact loss of
the whole batch only where each rank's batch has the statistics of the whole (the paper's code standardises over
the global batch with synchronised BatchNorm); ``tests/ssl/test_ddp_methods.py`` checks what holds.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.twoview import TwoViewMethod
from sslcluster.ssl.optim import OptimConfig


class BarlowTwins(TwoViewMethod):
    """Args: see :class:`SSLMethod`; ``lambda_param`` (weight of the redundancy-reduction term); projector
    sizes; ``gather_distributed`` (average the cross-correlation over ranks)."""

    method_name = "barlowtwins"
    # one pass per view (BatchNorm statistics per view), as Barlow Twins' main.py and lightly's benchmarks
    concatenate_views = False

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, lambda_param: float = 5e-3, hidden_dim: int = 8192,
                 output_dim: int = 8192, gather_distributed: bool = True) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if batch_size_per_device < 2:
            raise SSLClusterError(f"data.batch_size={batch_size_per_device}: Barlow Twins standardises each "
                                  "projection over the batch, which needs at least 2 images")
        if lambda_param < 0:
            raise SSLClusterError(f"method.module.lambda_param={lambda_param} must be non-negative")
        self.projection_head = BarlowTwinsProjectionHead(backbone.out_dim, hidden_dim, output_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=gather_distributed)
