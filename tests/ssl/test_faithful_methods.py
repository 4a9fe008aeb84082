"""The methods as their papers and reference code build them (issue 32): SimCLR's head width, MoCo's split
BatchNorm in both encoders, the EMA once per optimiser step, per-view BatchNorm statistics, DINO's per-parameter
gradient clipping."""

from __future__ import annotations

import torch
from torch import nn

from sslcluster.config import compose
from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.factory import build_method
from sslcluster.ssl.methods.moco import MoCo, SplitBatchNorm
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


# -- MoCo: split BatchNorm in both encoders ------------------------------------------------------------------------

def moco(**kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo(TinyCNN(1, width=4, depth=2), batch_size_per_device=16, queue_size=32, hidden_dim=16, output_dim=8,
                **kw)


def test_moco_query_batchnorm_splits_like_the_keys():
    """lightly's CIFAR-10 benchmark model and MoCo's CIFAR demo split the query encoder's BatchNorm too: a query
    depends on its own sub-batch only."""
    model = moco(key_bn_splits=2).train()  # query_bn_splits: as key_bn_splits
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(16, 1, 8, 8)
    y = x.clone()
    y[8:] = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        qx, qy = model.project(x), model.project(y)
    torch.testing.assert_close(qx[:8], qy[:8])
    assert (qx[8:] - qy[8:]).abs().max() > 1e-3
    # the default splits both encoders in 8
    default = moco()
    splits = {m.splits for m in default.modules() if isinstance(m, SplitBatchNorm)}
    assert splits == {8} and sum(isinstance(m, SplitBatchNorm) for m in default.backbone.modules()) > 0


def test_split_batchnorm_moves_its_running_statistics_once_per_pass():
    """The running statistics move once per training pass, towards the mean of the sub-batches' statistics
    (lightly's and MoCo's demo's SplitBatchNorm), not once per sub-batch."""
    torch.manual_seed(0)
    bn = SplitBatchNorm(nn.BatchNorm2d(3), splits=4).train()
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    bn(x)
    parts = x.reshape(4, 2, 3, 5, 5)
    means = parts.mean(dim=(1, 3, 4))                      # (4, 3)
    variances = parts.transpose(1, 2).reshape(4, 3, -1).var(dim=2, unbiased=True)
    torch.testing.assert_close(bn.running_mean, 0.1 * means.mean(0))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * variances.mean(0))
    assert int(bn.num_batches_tracked) == 1
