"""The methods' losses against references written here from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.methods.moco import MoCo
from sslcluster.ssl.methods.rotation import Rotation, rotate_batch


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
                 hidden_dim=16, output_dim=8)
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
    model = Rotation(TinyCNN(1, width=4, depth=1), batch_size_per_device=3, hidden_dim=8).eval()
    logits = model.rotation_logits(rotated)
    want = sum(-torch.log_softmax(logits[i], 0)[labels[i]] for i in range(12)) / 12
    assert torch.allclose(model.criterion(logits, labels), want, atol=1e-6)
    # chance level at initialisation is about log 4
    assert abs(float(want) - math.log(4)) < 1.0


def test_moco_momentum_schedule_and_ema():
    from lightly.models.utils import update_momentum

    model = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=4, queue_size=8, hidden_dim=16,
                 output_dim=8, momentum=0.9)
    p = next(model.backbone.parameters())
    pm = next(model.backbone_momentum.parameters())
    assert not pm.requires_grad and torch.equal(p, pm)
    with torch.no_grad():
        p.add_(1.0)
    before = pm.clone()
    update_momentum(model.backbone, model.backbone_momentum, 0.9)
    assert torch.allclose(pm, 0.9 * before + 0.1 * p)
