"""Export on two CPU processes (Lightning DDP, gloo): ``train.py checkpoint=CKPT trainer.devices=2`` gives the same
ids in the same order and the same values as one process, each rank computing its own shards; an export left
unfinished resumes across ranks; shards carry their rows, and rows out of order are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.stages.export import ShardFiller, export_world
from sslcluster.store.embeddings import ShardedWriter

from proc_helpers import REPO, child_env
from stages.test_export import make_checkpoint

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _env() -> dict[str, str]:
    env = child_env()
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS",
                "SSLCLUSTER_RUN_KEY"):
        env.pop(var, None)
    return env


def train_py(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The same checkpoint exported by 1 and by 2 processes (shards of 300 rows: 5 train shards, 2 test)."""
    tmp = tmp_path_factory.mktemp("ddp_export")
    base = [f"run.root={tmp / 'runs'}", "backbone.module.width=8", "backbone.module.depth=2", "logger=none"]
    ckpt = make_checkpoint(compose(base), tmp / "tiny.ckpt")
    common = [*base, f"checkpoint={ckpt}", "trainer.accelerator=cpu", "stages.cluster=false",
              "stages.evaluate=false", "stages.baseline=false", "report.enabled=false", "export.shard_size=300",
              "export.batch_size=64", "clustering.features=backbone"]
    one = train_py(tmp, *common, "run.key=one", "trainer.devices=1")
    two = train_py(tmp, *common, "run.key=two", "trainer.devices=2")
    return tmp / "runs", common, ckpt, one, two


def test_two_processes_export_what_one_does(exports):
    runs, _, _, _, two = exports
    log = two.stdout + two.stderr
    # each rank computed its own shards (train: 1437 rows in 5 shards, test: 360 rows in 2)
    assert "rank 0 of 2 computes shards [0, 2, 4]" in log and "rank 1 of 2 computes shards [1, 3]" in log, log[-3000:]
    assert "rank 1 of 2 computes shards [1]" in log
    for split in ("train", "test"):
        a, b = runs / "one" / "embeddings" / split, runs / "two" / "embeddings" / split
        assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()
        x1, x2 = np.load(a / "embeddings.npy"), np.load(b / "embeddings.npy")
        assert x1.shape == x2.shape and np.allclose(x1, x2, atol=1e-5, rtol=0)
        m1, m2 = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
        assert m1["status"] == m2["status"] == "complete" and m1["ids_sha256"] == m2["ids_sha256"]
        assert m2["processes"] == 2 and m1["processes"] == 1
        assert not (b / "shards").exists()


@pytest.mark.slow
def test_an_unfinished_export_resumes_across_ranks(exports, tmp_path):
    """Shards 0 and 1 of a one-process export are left; two processes compute only the others."""
    runs, common, _, _, _ = exports
    root = tmp_path / "runs"
    shutil.copytree(runs / "one", root / "part")
    folder = root / "part" / "embeddings" / "train"
    args = [a for a in common if not a.startswith("run.root=")] + [f"run.root={root}", "trainer.devices=2",
                                                                       "export.splits=[train]"]
    # the one-process export's shards, as an interrupted export leaves them: 2 of 5 done, manifest running
    writer_plan = json.loads((runs / "one" / "embeddings" / "train" / "manifest.json").read_text())["config"]
    x = np.load(folder / "embeddings.npy")
    (folder / "embeddings.npy").unlink()
    w = ShardedWriter(folder, len(x), 300, np.float32, writer_plan)
    w.begin()
    for k in (0, 1):
        s, e = w.shard_rows(k)
        w.write_shard(k, x[s:e], np.arange(s, e))
    proc = subprocess.run([sys.executable, "-m", "sslcluster.cli", "export", *args, "run.key=part"], env=_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "rank 0 of 2 computes shards [2, 4]" in log and "rank 1 of 2 computes shards [3]" in log, log[-3000:]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_shards"] == 2
    assert np.allclose(np.load(folder / "embeddings.npy"), x, atol=1e-5, rtol=0)


def test_shard_rows_out_of_order_are_refused(tmp_path):
    w = ShardedWriter(tmp_path / "e", 10, 4, np.float32, {"p": 1})
    w.begin()
    with pytest.raises(SSLClusterError, match="are not rows 0..3 in order"):
        w.write_shard(0, np.zeros((4, 2), np.float32), np.array([0, 1, 1, 3]))  # a padded duplicate
    filler = ShardFiller(w, [1, 2])
    filler.add(np.zeros((2, 2), np.float32), np.array([4, 5]))
    with pytest.raises(RuntimeError, match="row 5, expected 6"):
        filler.add(np.zeros((2, 2), np.float32), np.array([5, 6]))


def test_export_world_from_the_trainer_config():
    cfg = compose(["trainer.devices=2", "trainer.num_nodes=3"])
    assert export_world(cfg) == 6
    assert export_world(compose(["trainer.devices=auto"])) == 1
