"""The methods' losses against references written here from the papers' formulas: each method's own training step
(which views it pairs, which keys and queue it uses, its momentum), not only lightly's loss functions; and MoCo's
shuffle BN (the key encoder's BatchNorm statistics never those of the query batch, never synchronised)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.schedule import StepPlan
from sslcluster.ssl.methods.moco import MoCo
from sslcluster.ssl.methods.rotation import Rotation, rotate_batch
from sslcluster.ssl.methods.simclr import SimCLR


def quiet(model):
    """``model`` with ``self.log`` (which needs a trainer) silenced."""
    model.log = lambda *a, **k: None
    return model


class FakeTrainer:
    """What ``current_momentum`` reads of a trainer."""

    def __init__(self, step: int, total: int) -> None:
        self.global_step, self.estimated_stepping_batches = step, total


def reference_ntxent(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, eq. 1) by loops: for each of the 2B views, -log softmax of its positive among the
    2B-1 other views, averaged."""
    z = F.normalize(torch.cat([z0, z1]), dim=1).double()
    n = z0.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [(z[i] @ z[j]) / t for j in range(2 * n) if j != i]
        denom = torch.logsumexp(torch.stack(sims), 0)
        total = total + (denom - (z[i] @ z[pos]) / t)
    return total / (2 * n)


def reference_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1): -log exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t))."""
    q, k = F.normalize(q, dim=1).double(), F.normalize(k, dim=1).double()
    queue = queue.double()
    losses = []
    for i in range(q.shape[0]):
        pos = q[i] @ k[i] / t
        neg = queue @ q[i] / t
        losses.append(-(pos - torch.logsumexp(torch.cat([pos[None], neg]), 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_ntxent_matches_reference(t):
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    got = NTXentLoss(temperature=t)(z0, z1)
    assert torch.allclose(got.double(), reference_ntxent(z0, z1, t), atol=1e-5)


def test_moco_infonce_with_queue_matches_reference_and_enqueues_keys():
    torch.manual_seed(0)
    model = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=4, temperature=0.2, queue_size=8,
                 hidden_dim=16, output_dim=8, key_bn_splits=2)
    q, k = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    queue_before = model.queue.clone()
    got = model.criterion(q, k)
    want = reference_infonce(q.detach(), k, queue_before, 0.2)
    assert torch.allclose(got.double(), want, atol=1e-5)
    # the step's keys (normalised) entered the queue at its head; the rest is unchanged
    assert torch.allclose(model.queue[:4], F.normalize(k, dim=1), atol=1e-6)
    assert torch.equal(model.queue[4:], queue_before[4:])


def test_rotation_ce_matches_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 1, 8, 8) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # block r is the image turned r x 90 degrees counter-clockwise: a pixel at (row 0, col 0) goes to (H-1, 0)
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 0] = 1
    r, _ = rotate_batch(img)
    assert r[1, 0, 3, 0] == 1 and r[2, 0, 3, 3] == 1 and r[3, 0, 0, 3] == 1
    # the method's own step: each image turned four ways, each turn scored against its own label (eval mode, so
    # BatchNorm does not depend on how the batch is assembled); logits by image and turn written here
    model = quiet(Rotation(TinyCNN(1, width=4, depth=1), batch_size_per_device=3, hidden_dim=8)).eval()
    got = model.training_step(([x], torch.arange(3)), 0)
    want = 0.0
    for i in range(3):
        for r in range(4):
            logits = model.rotation_logits(torch.rot90(x[i:i + 1], r, dims=(2, 3)))[0]
            want = want - torch.log_softmax(logits, 0)[r]
    assert torch.allclose(got, want / 12, atol=1e-5)
    # a head whose logits ignore the image scores exactly log 4
    model.head.classifier.weight.data.zero_()
    model.head.classifier.bias.data.zero_()
    assert float(model.training_step(([x], torch.arange(3)), 0)) == pytest.approx(math.log(4), abs=1e-6)


def test_simclr_step_pairs_the_two_views_of_each_image():
    torch.manual_seed(0)
    model = quiet(SimCLR(TinyCNN(1, width=4, depth=1), batch_size_per_device=5, temperature=0.5, hidden_dim=16,
                         output_dim=8)).eval()
    x0, x1 = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    got = model.training_step(([x0, x1], torch.arange(5)), 0)
    want = reference_ntxent(model.project(x0).detach(), model.project(x1).detach(), 0.5)
    assert torch.allclose(got.double(), want, atol=1e-5)
    # pairing image i's first view with another image's second view gives another loss: the test can fail
    wrong = reference_ntxent(model.project(x0).detach(), model.project(x1.roll(1, 0)).detach(), 0.5)
    assert abs(float(wrong) - float(want)) > 1e-3


def test_moco_step_pairs_each_query_with_its_own_key_and_the_queue():
    torch.manual_seed(0)
    model = quiet(MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=4, temperature=0.2, queue_size=8,
                       hidden_dim=16, output_dim=8, momentum=0.5, key_bn_splits=2))
    with torch.no_grad():  # query and key encoders apart, so a swapped pairing would show
        for p in model.backbone.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    xq, xk = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    queue_before = model.queue.clone()
    key_before = [p.clone() for p in model.backbone_momentum.parameters()]
    got = model.training_step(([xq, xk], torch.arange(4)), 0)
    # the step moved the key encoder by its momentum: key = m * key + (1 - m) * query
    for before, pk, pq in zip(key_before, model.backbone_momentum.parameters(), model.backbone.parameters()):
        assert torch.allclose(pk, 0.5 * before + 0.5 * pq, atol=1e-6)
    q = model.project(xq).detach()
    k = model.projection_head_momentum(model.backbone_momentum(xk))
    assert torch.allclose(got.double(), reference_infonce(q, k, queue_before, 0.2), atol=1e-5)
    assert torch.allclose(model.queue[:4], F.normalize(k, dim=1), atol=1e-6)  # this step's keys enqueued


def test_moco_momentum_is_mocov2s_constant_by_default_and_byols_cosine_when_asked():
    model = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=8, queue_size=8, hidden_dim=16, output_dim=8)
    for step in (0, 50, 100):
        model._trainer = FakeTrainer(step, 100)  # type: ignore[assignment]
        assert model.current_momentum() == 0.999  # MoCo v2 (Chen et al. 2020): m = 0.999, constant
    byol = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=8, queue_size=8, hidden_dim=16, output_dim=8,
                momentum=0.99, momentum_end=1.0)
    # lightly's cosine_schedule over steps 0..T-1: 1 - (1 - m0) (cos(pi t / (T - 1)) + 1) / 2
    want = {0: 0.99, 50: 1 - 0.01 * (math.cos(math.pi * 50 / 99) + 1) / 2, 99: 1.0}
    byol.step_plan = StepPlan(total=100, warmup=0, steps_per_epoch=10)  # the run's 100 optimiser steps
    for step, m in want.items():
        byol._trainer = FakeTrainer(step, 100)  # type: ignore[assignment]
        assert byol.current_momentum() == pytest.approx(m, abs=1e-9)
    model._trainer = byol._trainer = None


# -- shuffle BN ------------------------------------------------------------------------------------------------

def moco_model(**kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo(TinyCNN(1, width=4, depth=2), batch_size_per_device=16, queue_size=32, hidden_dim=16,
                output_dim=8, **kw)


def test_keys_never_share_the_query_batchs_statistics_on_one_device():
    """Key and query encoders are equal at the start; with the same images, a key computed with the query batch's
    BatchNorm statistics would equal its query exactly (the leak). The default splits the key batch's BN."""
    model = moco_model().train()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        q = model.project(x)
        k = model.project_momentum(x)
    assert (q - k).abs().max() > 1e-3
    # and with the split switched off (one sub-batch), they are equal: what the split prevents
    one = moco_model(key_bn_splits=1, query_bn_splits=1).train()
    with torch.no_grad():
        torch.testing.assert_close(one.project(x), one.project_momentum(x), atol=1e-5, rtol=1e-5)


def test_a_key_depends_only_on_its_own_sub_batch():
    model = moco_model(shuffle_bn=False, key_bn_splits=2).train()
    x = torch.randn(16, 1, 8, 8)
    y = x.clone()
    y[8:] = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        kx, ky = model.project_momentum(x), model.project_momentum(y)
    torch.testing.assert_close(kx[:8], ky[:8])
    assert (kx[8:] - ky[8:]).abs().max() > 1e-3


def test_sync_batchnorm_never_reaches_the_key_encoder():
    """``trainer.sync_batchnorm`` converts with torch's ``convert_sync_batchnorm``: an unsplit query encoder's BN
    becomes SyncBatchNorm, the key encoder's stays per rank (synchronising it would undo the cross-rank shuffle);
    split query BatchNorm (the default) stays too."""
    split = torch.nn.SyncBatchNorm.convert_sync_batchnorm(moco_model())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in split.modules())
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(moco_model(query_bn_splits=1))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.backbone.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.backbone_momentum.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.projection_head_momentum.modules())
