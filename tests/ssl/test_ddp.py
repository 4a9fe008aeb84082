"""Real two-process DDP on CPU (gloo): SimCLR's loss and gradients match a one-process run on the whole batch; MoCo's
queue is the same on every rank after a step; ``train.py trainer.devices=2`` runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.models.utils import update_momentum

from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.methods.moco import MoCo
from sslcluster.ssl.methods.simclr import SimCLR
from tests.gloo import free_port, needs_gloo

ROOT = Path(__file__).resolve().parents[2]
B = 4  # images per rank
WORLD = 2

pytestmark = needs_gloo


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g)


def simclr_model() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(TinyCNN(1, width=4, depth=1, norm="none"), batch_size_per_device=B, temperature=0.3,
                  hidden_dim=16, output_dim=8, head_batch_norm=False, gather_distributed=True)


def simclr_loss_and_grads(model: SimCLR, x0: torch.Tensor, x1: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """The method's step (one pass over both views, NT-Xent), then DDP's gradient averaging over ranks."""
    z0, z1 = model.project(torch.cat([x0, x1])).chunk(2)
    loss = model.criterion(z0, z1)
    loss.backward()
    loss = loss.detach()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    if dist.is_initialized():
        for g in grads:
            dist.all_reduce(g)
            g /= dist.get_world_size()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        return float(mean_loss) / dist.get_world_size(), grads
    return float(loss), grads


def _worker(rank: int, port: int, out: str) -> None:
    """One rank of the gloo group: a SimCLR step on its half of the batch, then a MoCo step on its own images."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x0, x1 = data(B * WORLD)
        model = simclr_model()
        loss, grads = simclr_loss_and_grads(model, x0[rank * B:(rank + 1) * B], x1[rank * B:(rank + 1) * B])
        torch.save({"loss": loss, "grads": grads}, f"{out}/simclr{rank}.pt")
        _moco_step(rank, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Runs :func:`_worker` on 2 CPU processes (one spawn for both methods: each start costs the imports)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def test_simclr_two_ranks_equal_one_rank_with_double_batch(two_ranks):
    x0, x1 = data(B * WORLD)
    loss1, grads1 = simclr_loss_and_grads(simclr_model(), x0, x1)
    for rank in range(WORLD):
        got = torch.load(two_ranks / f"simclr{rank}.pt")
        assert got["loss"] == pytest.approx(loss1, rel=1e-5, abs=1e-6)
        assert len(got["grads"]) == len(grads1)
        for g2, g1 in zip(got["grads"], grads1):
            assert torch.allclose(g2, g1, rtol=1e-4, atol=1e-6), (g2 - g1).abs().max()
    # and without gathering the ranks would not agree with the one-process run: the test can fail
    model = simclr_model()
    model.criterion.gather_distributed = False
    half, _ = simclr_loss_and_grads(model, x0[:B], x1[:B])
    assert abs(half - loss1) > 1e-3


def _moco_step(rank: int, out: str) -> None:
    """The MoCo step's core (momentum update, keys with shuffle BN across ranks, InfoNCE with the queue)."""
    torch.manual_seed(0)
    model = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=B, queue_size=4 * B * WORLD,
                 hidden_dim=16, output_dim=8, momentum=0.9, key_bn_splits=2)
    model.check_queue(dist.get_world_size())
    torch.manual_seed(100 + rank)  # different images on each rank
    xq, xk = torch.randn(B, 1, 8, 8), torch.randn(B, 1, 8, 8)
    update_momentum(model.backbone, model.backbone_momentum, 0.9)
    k = model.project_momentum(xk)  # shuffle BN across the ranks
    loss = model.criterion(model.project(xq), k)
    loss.backward()
    torch.save({"queue": model.queue.clone(), "ptr": int(model.criterion.memory_bank.bank_ptr),
                "keys": torch.nn.functional.normalize(k, dim=1)}, f"{out}/moco{rank}.pt")


def test_moco_queue_holds_the_same_keys_on_every_rank(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"moco{r}.pt") for r in range(WORLD))
    assert torch.equal(r0["queue"], r1["queue"]) and r0["ptr"] == r1["ptr"] == B * WORLD
    # the head of the queue holds every rank's keys, in rank order
    assert torch.allclose(r0["queue"][:B], r0["keys"], atol=1e-6)
    assert torch.allclose(r0["queue"][B:2 * B], r1["keys"], atol=1e-6)
    assert not torch.allclose(r0["keys"], r1["keys"])


LIGHTNING_SCRIPT = textwrap.dedent('''
    import sys, torch, pytorch_lightning as pl
    from torch.utils.data import DataLoader, Dataset
    from sslcluster.ssl.backbones import TinyCNN
    from sslcluster.ssl.methods.moco import MoCo

    class Views(Dataset):
        def __len__(self): return 32
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return [torch.randn(1, 8, 8, generator=g), torch.randn(1, 8, 8, generator=g)], i

    class Dump(pl.Callback):
        def on_train_end(self, trainer, module):
            torch.save({"queue": module.queue.clone(), "ptr": int(module.criterion.memory_bank.bank_ptr),
                        "step": trainer.global_step}, f"{sys.argv[1]}/rank{trainer.global_rank}.pt")

    pl.seed_everything(0)
    queue = int(sys.argv[2])
    model = MoCo(TinyCNN(1, width=4, depth=1), batch_size_per_device=4, queue_size=queue, hidden_dim=16,
                 output_dim=8, key_bn_splits=2, optim={"name": "sgd", "lr": 0.1, "warmup_epochs": 0})
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Dump()])
    trainer.fit(model, DataLoader(Views(), batch_size=4, drop_last=True))
''')


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)
    return env


@pytest.mark.slow
def test_moco_queue_in_lightning_ddp(tmp_path):
    """The method's own training_step under Lightning's DDP (2 CPU processes): same queue on both ranks after
    3 steps, 3 x 8 keys in; a queue that is not a multiple of the global batch 8 is refused with the numbers."""
    script = tmp_path / "moco_ddp.py"
    script.write_text(LIGHTNING_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "32"], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["step"] == 3 and torch.equal(r0["queue"], r1["queue"]) and r0["ptr"] == r1["ptr"] == 24
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "12"], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "queue_size=12 is not a multiple of the global batch 8 (data.batch_size=4 x 2 devices)" in proc.stderr


def test_launch_rank_from_environment(monkeypatch):
    from sslcluster.stages.pretrain import is_launch_rank_zero

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert is_launch_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process started by Lightning's launcher
    assert not is_launch_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert not is_launch_rank_zero()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task in a SLURM job: alone
    assert is_launch_rank_zero()
    monkeypatch.setenv("RANK", "0")  # torchrun
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert is_launch_rank_zero()


def test_non_zero_rank_needs_a_run_key(tiny, monkeypatch):
    from sslcluster.config import compose
    from sslcluster.errors import SSLClusterError
    from sslcluster.pipeline import stage_pretrain

    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("SSLCLUSTER_RUN_KEY", raising=False)
    with pytest.raises(SSLClusterError, match="run.key=NAME"):
        stage_pretrain(compose(tiny))


def test_train_py_with_two_devices(tmp_path):
    """``train.py trainer.devices=2`` (Lightning picks DDP): both processes train into one run directory and export
    (each its share of the shards; here one shard per split, so rank 1 computes a dropped padding batch); rank 0
    alone assembles, clusters and reports."""
    args = [sys.executable, str(ROOT / "train.py"), f"run.root={tmp_path / 'runs'}", "run.key=ddp",
            "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1",
            "data.batch_size=32", "backbone.module.width=8", "backbone.module.depth=2", "logger=none",
            "clustering.algorithm.n_init=1", "evaluate.linear_probe=false", "monitor.linear=false",
            "stages.baseline=false", "evaluate.plots.enabled=false"]  # pictures: tests/evaluation/test_plots.py
    proc = subprocess.run(args, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run key: ddp") == 1
    log = proc.stdout + proc.stderr
    assert "rank 0 of 2 computes shards [0]" in log and "rank 1 of 2 computes shards []" in log
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file() and (runs[0] / "metrics.json").is_file()
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=False)
    # 1437 train images / (32 x 2 ranks) = 22 steps with the distributed sampler (44 on one device)
    assert ckpt["global_step"] == 22
