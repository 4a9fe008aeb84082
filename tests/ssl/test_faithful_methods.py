"""The methods as their papers and reference code build them (issue 32): SimCLR's head width, MoCo's split
BatchNorm in both encoders, the EMA once per optimiser step, per-view BatchNorm statistics, DINO's per-parameter
gradient clipping."""

from __future__ import annotations

from torch import nn

from sslcluster.config import compose
from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.factory import build_method
from sslcluster.ssl.methods.simclr import SimCLR


def test_simclr_head_hidden_width_follows_the_backbone():
    backbone = TinyCNN(1, width=4, depth=2)  # out_dim 8
    head = SimCLR(backbone, batch_size_per_device=4, output_dim=6).projection_head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 8), (8, 6)]
    # configured, it is taken as given
    head = SimCLR(TinyCNN(1, width=4, depth=2), batch_size_per_device=4, hidden_dim=5, output_dim=6).projection_head
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [5, 6]
    # the digits default: tiny_cnn's 128 features -> a 128-wide hidden layer
    model = build_method(compose([]))
    assert model.backbone.out_dim == 128
    assert [m.out_features for m in model.projection_head.modules()
            if isinstance(m, nn.Linear)] == [128, 128]
