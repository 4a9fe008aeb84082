"""VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning").

Two views through one network (backbone + expander, lightly's ``VICRegProjectionHead``); the loss (lightly's
``VICRegLoss``) is ``lambda * invariance (MSE between the views) + mu * variance (hinge on each dimension's std)
+ nu * covariance (squared off-diagonal covariances / d)``.

Distributed (``gather_distributed``): the variance and covariance terms are computed over the projections of every
rank (gathered with gradients), the invariance term per rank (its mean over ranks is the whole batch's), so N ranks
x B images train as one rank with N x B (``tests/ssl/test_ddp_methods.py``).
"""

from __future__ import annotations

from typing import Any

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.twoview import TwoViewMethod
from sslcluster.ssl.optim import OptimConfig


class VICReg(TwoViewMethod):
    """Args: see :class:`SSLMethod`; the loss weights ``lambda_param`` (invariance), ``mu_param`` (variance),
    ``nu_param`` (covariance); expander sizes and layers; ``gather_distributed`` (variance and covariance over
    every rank's projections)."""

    method_name = "vicreg"
    # one pass per view (BatchNorm statistics per view), as VICReg's main_vicreg.py and lightly's benchmarks
    concatenate_views = False

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, lambda_param: float = 25.0, mu_param: float = 25.0,
                 nu_param: float = 1.0, hidden_dim: int = 8192, output_dim: int = 8192, num_layers: int = 3,
                 gather_distributed: bool = True) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if batch_size_per_device < 2:
            raise SSLClusterError(f"data.batch_size={batch_size_per_device}: VICReg's variance and covariance "
                                  "terms need at least 2 images per batch")
        for key, value in (("lambda_param", lambda_param), ("mu_param", mu_param), ("nu_param", nu_param)):
            if value < 0:
                raise SSLClusterError(f"method.module.{key}={value} must be non-negative")
        if num_layers < 2:
            raise SSLClusterError(f"method.module.num_layers={num_layers} must be at least 2")
        self.projection_head = VICRegProjectionHead(backbone.out_dim, hidden_dim, output_dim, num_layers)
        self.criterion = VICRegLoss(lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param,
                                    gather_distributed=gather_distributed)
