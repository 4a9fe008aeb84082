"""The methods as their papers and reference code build them (issue 32): SimCLR's head width, MoCo's split
BatchNorm in both encoders, the EMA once per optimiser step, per-view BatchNorm statistics, DINO's per-parameter
gradient clipping."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from lightly.models.utils import update_momentum as lightly_update_momentum
from torch import nn
from torch.utils.data import DataLoader

from sslcluster.config import compose
from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.factory import build_method
from sslcluster.ssl.methods import momentum as momentum_module
from sslcluster.ssl.methods.barlowtwins import BarlowTwins
from sslcluster.ssl.methods.byol import BYOL
from sslcluster.ssl.methods.dino import DINO
from sslcluster.ssl.methods.moco import MoCo, SplitBatchNorm
from sslcluster.ssl.methods.simclr import SimCLR
from sslcluster.ssl.methods.vicreg import VICReg


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


# -- per-view BatchNorm statistics ---------------------------------------------------------------------------------

def batchnorm_batch_sizes(model: nn.Module, batch: tuple[list[torch.Tensor], torch.Tensor]) -> set[int]:
    """The batch sizes every BatchNorm layer of ``model`` saw during one training step."""
    sizes: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda _m, args: sizes.add(int(args[0].shape[0])))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        model.training_step(batch, 0)
    finally:
        for h in hooks:
            h.remove()
    return sizes


@pytest.mark.parametrize("method,per_view", [("byol", True), ("barlowtwins", True), ("vicreg", True),
                                             ("simclr", False)])
def test_views_get_their_own_batchnorm_statistics(method, per_view):
    """BYOL, Barlow Twins and VICReg forward each view on its own (their reference code, lightly's benchmarks):
    every BatchNorm sees B images; SimCLR's reference concatenates the views: 2B."""
    torch.manual_seed(0)
    cls = {"byol": BYOL, "barlowtwins": BarlowTwins, "vicreg": VICReg, "simclr": SimCLR}[method]
    model = cls(TinyCNN(1, width=4, depth=1), batch_size_per_device=6, hidden_dim=16, output_dim=8).train()
    views = [torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)]
    assert batchnorm_batch_sizes(model, (views, torch.zeros(6))) == ({6} if per_view else {12})


# -- the EMA once per optimiser step -------------------------------------------------------------------------------

class Counting:
    """Counts calls of lightly's ``update_momentum`` (one per online/copy pair and move)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module, model_ema: nn.Module, m: float) -> None:
        self.calls += 1
        lightly_update_momentum(model, model_ema, m)


@pytest.mark.parametrize("method", ["byol", "moco", "dino"])
def test_momentum_moves_once_per_optimiser_step_under_accumulation(method, monkeypatch, tmp_path):
    torch.manual_seed(0)
    backbone = TinyCNN(1, width=4, depth=1)
    model = {"byol": lambda: BYOL(backbone, batch_size_per_device=4, hidden_dim=16, output_dim=8),
             "moco": lambda: MoCo(backbone, batch_size_per_device=4, queue_size=8, hidden_dim=16, output_dim=8,
                                  key_bn_splits=2),
             "dino": lambda: DINO(backbone, batch_size_per_device=4, hidden_dim=16, bottleneck_dim=8,
                                  output_dim=16)}[method]()
    counting = Counting()
    monkeypatch.setattr(momentum_module, "update_momentum", counting)
    batches = [([torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)], torch.zeros(4)) for _ in range(6)]
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=3, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 2  # 6 micro-batches, 3 per optimiser step
    assert counting.calls == 2 * len(model._momentum_pairs)


# -- DINO's per-parameter gradient clipping -------------------------------------------------------------------------

class Scaled(nn.Module):
    """A loss multiplied by ``factor``: gradients far above DINO's clipping norm."""

    def __init__(self, loss: nn.Module, factor: float) -> None:
        super().__init__()
        self.loss, self.factor = loss, factor

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.factor * self.loss(*args, **kwargs)


class GradNorms(pl.Callback):
    """Each parameter's gradient norm as the optimiser stepped with it (Lightning zeroes gradients only before
    the next backward pass)."""

    def __init__(self) -> None:
        self.norms: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.norms.append({n: float(p.grad.norm()) for n, p in pl_module.named_parameters() if p.grad is not None})


def test_dino_clips_each_parameters_gradient_norm_at_3(tmp_path):
    """DINO's code clips each parameter's gradient to norm 3 (``--clip_grad 3.0``, ``utils.clip_gradients``), not the
    global norm."""
    torch.manual_seed(0)
    model = DINO(TinyCNN(1, width=4, depth=1), batch_size_per_device=4, hidden_dim=16, bottleneck_dim=8,
                 output_dim=16, freeze_last_layer=0)
    model.criterion = Scaled(model.criterion, 1e4)
    norms = GradNorms()
    batches = [([torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)], torch.zeros(4)) for _ in range(2)]
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[norms])
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    for step in norms.norms:
        assert max(step.values()) <= 3.0 * (1 + 1e-4)
        # many parameters were clipped (their norm is 3), and each on its own: the global norm is well above 3
        assert sum(abs(v - 3.0) < 1e-3 for v in step.values()) >= 3
        assert sum(v * v for v in step.values()) ** 0.5 > 3.5
