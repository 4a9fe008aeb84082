"""Real two-process DDP on CPU (gloo) for VICReg, Barlow Twins and DINO: what their losses do across ranks.

- VICReg (``gather_distributed``): 2 ranks x B images give the loss and gradients of 1 rank with 2B.
- Barlow Twins (lightly's ``gather_distributed``): the cross-correlation matrices of the ranks are averaged, each
  rank standardising its own projections; that equals the mean of the per-rank matrices computed in one process,
  not the 2B batch's own matrix (the paper's code standardises over the global batch) - both are checked.
- DINO: the teacher centre is all-reduced, so every rank holds the same centre, the one of the whole batch.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.methods.barlowtwins import BarlowTwins
from sslcluster.ssl.methods.dino import DINO
from sslcluster.ssl.methods.vicreg import VICReg
from tests.gloo import free_port, needs_gloo

B = 4  # images per rank
WORLD = 2

pytestmark = needs_gloo


def data(n: int, size: int = 8, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)


def models() -> dict[str, torch.nn.Module]:
    """The same initial weights in every process; eval mode, so BatchNorm layers use running statistics and a
    sample's projection does not depend on which rank's batch it is in (the losses' own batch statistics remain)."""
    torch.manual_seed(0)
    vicreg = VICReg(TinyCNN(1, width=4, depth=1), batch_size_per_device=B, hidden_dim=16, output_dim=8)
    torch.manual_seed(0)
    barlow = BarlowTwins(TinyCNN(1, width=4, depth=1), batch_size_per_device=B, hidden_dim=16, output_dim=8)
    torch.manual_seed(0)
    dino = DINO(TinyCNN(1, width=4, depth=1), batch_size_per_device=B, hidden_dim=16, bottleneck_dim=8, output_dim=16,
                batch_norm=True)
    out = {"vicreg": vicreg, "barlowtwins": barlow, "dino": dino}
    torch.manual_seed(1)
    with torch.no_grad():  # weights spread apart, so that projections differ clearly between images
        for model in out.values():
            for p in model.parameters():
                p.add_(0.5 * torch.randn_like(p))
            model.eval()
    return out


def loss_and_grads(model: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """The two-view step's loss (projections in one pass, as the methods do), then DDP's gradient averaging."""
    z0, z1 = model.project(torch.cat([x0, x1])).chunk(2)
    loss = model.criterion(z0, z1)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    loss = loss.detach().clone()
    if dist.is_initialized():
        for g in grads:
            dist.all_reduce(g)
            g /= dist.get_world_size()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    return float(loss), grads


def dino_teacher_step(model: DINO, crops: list[torch.Tensor]) -> torch.Tensor:
    """One DINO loss on the crops (teacher on the two global crops); the centre after it."""
    teacher = list(model.project_teacher(torch.cat(crops[:2])).chunk(2))
    student = [model.project(x) for x in crops]
    model.criterion(teacher, student, epoch=0)
    return model.criterion.center.detach().clone()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x0, x1 = data(B * WORLD)
        mine = slice(rank * B, (rank + 1) * B)
        result = {}
        for name, model in models().items():
            if name == "dino":
                result[name] = dino_teacher_step(model, [x0[mine], x1[mine]])
            else:
                result[name] = loss_and_grads(model, x0[mine], x1[mine])
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Runs :func:`_worker` on 2 CPU processes (one spawn for the three methods)."""
    out = tmp_path_factory.mktemp("ddp_methods")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def assert_same(got: tuple[float, list[torch.Tensor]], want: tuple[float, list[torch.Tensor]]) -> None:
    """Same loss and gradients, up to float32 rounding (relative to the largest gradient entry of the model)."""
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    assert len(got[1]) == len(want[1])
    scale = max(float(g.abs().max()) for g in want[1])
    for g2, g1 in zip(got[1], want[1]):
        assert torch.allclose(g2, g1, rtol=1e-4, atol=1e-5 * scale), (g2 - g1).abs().max()


def test_vicreg_two_ranks_equal_one_rank_with_double_batch(two_ranks):
    x0, x1 = data(B * WORLD)
    whole = loss_and_grads(models()["vicreg"], x0, x1)
    for rank in range(WORLD):
        assert_same(two_ranks[rank]["vicreg"], whole)
    # without gathering, a rank's variance and covariance terms see its own half only: another loss
    model = models()["vicreg"]
    model.criterion.gather_distributed = False
    halves = [loss_and_grads(model, x0[s], x1[s])[0] for s in (slice(0, B), slice(B, 2 * B))]
    assert abs(sum(halves) / 2 - whole[0]) > 1e-3


def test_barlowtwins_two_ranks_average_the_per_rank_cross_correlations(two_ranks):
    x0, x1 = data(B * WORLD)
    # the reference in one process: the loss of the mean of the halves' cross-correlation matrices
    model = models()["barlowtwins"]
    z0, z1 = model.project(torch.cat([x0, x1])).chunk(2)

    def corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5)
        b = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + 1e-5)
        return a.T @ b / a.shape[0]

    c = (corr(z0[:B], z1[:B]) + corr(z0[B:], z1[B:])) / 2
    off = c - torch.diag(torch.diagonal(c))
    loss = ((torch.diagonal(c) - 1) ** 2).sum() + model.criterion.lambda_param * (off ** 2).sum()
    loss.backward()
    want = (float(loss), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None])
    for rank in range(WORLD):
        assert_same(two_ranks[rank]["barlowtwins"], want)
    # ... which is not the one-rank loss of the 2B batch (per-rank standardisation): documented, not claimed
    whole = loss_and_grads(models()["barlowtwins"], x0, x1)
    assert abs(whole[0] - want[0]) > 1e-3


def test_dino_teacher_centre_is_the_same_on_every_rank_and_that_of_the_whole_batch(two_ranks):
    c0, c1 = two_ranks[0]["dino"], two_ranks[1]["dino"]
    assert torch.equal(c0, c1)
    x0, x1 = data(B * WORLD)
    whole = dino_teacher_step(models()["dino"], [x0, x1])
    assert torch.allclose(c0, whole, atol=1e-6)
    half = dino_teacher_step(models()["dino"], [x0[:B], x1[:B]])  # one rank's own mean would differ
    assert not torch.allclose(c0, half, atol=1e-5)
