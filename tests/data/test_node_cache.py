"""The decoded-image cache under DDP: written once per node by local rank 0, read by the node's other processes.

A real two-process gloo group on CPU runs the data module's ``setup`` as Lightning's DDP would; the decode
function counts its calls per rank in marker files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcluster.data import device_data as D
from sslcluster.data.sources import DigitsSource
from sslcluster.errors import SSLClusterError
from tests.gloo import free_port, needs_gloo

WORLD = 2

gloo = needs_gloo


def _setup(out: str, cache: str, rank: int) -> dict:
    """The device path's setup on this rank: what it loaded, or the error it raised."""
    from sslcluster.config import compose
    from sslcluster.stages.common import build_source

    cfg = compose(["data.batch_size=64", "data.pipeline=device", f"data.device_cache.dir={cache}"])
    data = D.build_pretrain_data(cfg, build_source(cfg, "train"))
    try:
        data.setup("fit")
    except Exception as e:  # noqa: BLE001  (reported to the test)
        return {"error": f"{type(e).__name__}: {e}"}
    return {"used": data.used, "images": data.images, "sizes": data.sizes, "path": str(data.cache_path),
            "cache_side": data.cache_side}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)  # as torchrun and Lightning's launcher set it: both ranks on one node
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        original = D.decode_source
        fail = {"on": True}

        def counted(*args, **kwargs):
            with open(f"{out}/decoded.rank{rank}", "a") as f:
                f.write("decode\n")
            time.sleep(1.0)  # the other rank reaches the cache while this one decodes
            if fail["on"]:
                raise OSError("disk full")
            return original(*args, **kwargs)

        D.decode_source = counted
        failing = _setup(out, f"{out}/cache_failing", rank)
        for f in Path(out).glob("decoded.rank*"):
            f.rename(f.with_name("failing-" + f.name))
        fail["on"] = False
        working = _setup(out, f"{out}/cache", rank)
        torch.save({"failing": failing, "working": working}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("node_cache")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


@gloo
def test_two_ranks_share_one_cache_decoded_by_local_rank_zero(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"rank{r}.pt", weights_only=False)["working"] for r in range(WORLD))
    assert "error" not in r0 and "error" not in r1, (r0, r1)
    # rank 0 decoded once, rank 1 never
    assert (two_ranks / "decoded.rank0").read_text() == "decode\n"
    assert not (two_ranks / "decoded.rank1").exists()
    # one cache, written once, and both ranks hold its contents
    npy = sorted(p.name for p in (two_ranks / "cache").iterdir())
    key = Path(r0["path"]).stem
    assert npy == [f"{key}.json", f"{key}.npy", f"{key}.sizes.npy"] and r1["path"] == r0["path"]
    assert r0["used"] == r1["used"] == "device" and r0["cache_side"] == r1["cache_side"]
    assert torch.equal(r0["images"], r1["images"]) and torch.equal(r0["sizes"], r1["sizes"])
    on_disk = np.load(r0["path"])
    assert on_disk.shape == (1437, 1, 16, 16) and np.array_equal(r1["images"].numpy(), on_disk)
    # the same as one process decoding the split alone
    alone, _ = D.decode_source(DigitsSource("train", image_size=16), r0["cache_side"], 1)
    assert np.array_equal(on_disk, alone)


@gloo
def test_rank_zero_failing_fails_the_other_rank_with_one_line(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"rank{r}.pt", weights_only=False)["failing"] for r in range(WORLD))
    assert r0 == {"error": "OSError: disk full"}
    assert r1["error"].startswith("SSLClusterError: the decoded-image cache ")
    assert "local rank 0 of a node failed to write it" in r1["error"] and "\n" not in r1["error"]
    assert (two_ranks / "failing-decoded.rank0").read_text() == "decode\n"
    assert not (two_ranks / "failing-decoded.rank1").exists()


def test_without_a_process_group_the_other_ranks_wait_for_the_files(tmp_path, monkeypatch):
    """No torch.distributed group: local rank 1 polls the folder; it reads what rank 0 wrote, reports rank 0's
    failure note (not an earlier launch's), and gives up after data.device_cache.wait_s."""
    src = DigitsSource("train", image_size=8)
    cache = tmp_path / "cache"
    with pytest.raises(SSLClusterError, match=r"^data.device_cache.wait_s=0.3: local rank 0 did not write"):
        D.node_cache(src, 8, 1, cache, local_rank=1, wait_s=0.3)
    monkeypatch.setattr(D, "decode_source", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        D.node_cache(src, 8, 1, cache, local_rank=0)
    with pytest.raises(SSLClusterError, match="local rank 0 failed to write it: OSError: disk full"):
        D.node_cache(src, 8, 1, cache, local_rank=1, wait_s=30)
    note = next(cache.glob("*.failed"))
    os.utime(note, (1, 1))  # an earlier launch's note is not this one's failure
    with pytest.raises(SSLClusterError, match="wait_s=0.3"):
        D.node_cache(src, 8, 1, cache, local_rank=1, wait_s=0.3)
    monkeypatch.undo()
    arr, sizes, path, reused = D.node_cache(src, 8, 1, cache, local_rank=0)
    assert not reused and not note.exists()
    got, got_sizes, got_path, reused = D.node_cache(src, 8, 1, cache, local_rank=1, wait_s=0.3)
    assert reused and got_path == path and isinstance(got, np.memmap) and np.array_equal(got, arr)
    assert np.array_equal(got_sizes, sizes)


def test_local_rank_from_the_launchers(monkeypatch):
    from sslcluster.distributed import local_rank

    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    assert local_rank() == 0
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun, Lightning's launcher
    assert local_rank() == 1


def test_wait_s_must_be_positive(compose, tmp_path):
    from sslcluster.stages.common import build_source

    cfg = compose(["data.pipeline=device", "data.device_cache.wait_s=0"])
    with pytest.raises(SSLClusterError, match=r"^data.device_cache.wait_s=0 must be a positive number of seconds$"):
        D.build_pretrain_data(cfg, build_source(cfg, "train"))
