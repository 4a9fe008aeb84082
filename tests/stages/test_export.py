"""Sharded, resumable, streaming export: a killed export resumes to the same bytes, is never taken as complete,
float16 works, and memory holds one shard, not the data set."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_cluster, stage_export
from sslcluster.ssl.methods.base import CONFIG_KEY
from sslcluster.stages.common import to_plain
from sslcluster.stages.export import export_split
from sslcluster.stages.pretrain import build_method
from sslcluster.store.embeddings import read_embeddings
from sslcluster.store.rundir import RunDir

from proc_helpers import REPO, child_env


# Runs one export stage in a child process; with a delay per image so the test can kill it mid-export.
EXPORT_SCRIPT = textwrap.dedent("""
    import sys, time
    from sslcluster.config import compose
    from sslcluster.data import sources
    from sslcluster.pipeline import stage_export

    delay = float(sys.argv[1])
    for cls in (sources.DigitsSource, sources.ImageFolderSource):
        def load(self, i, _orig=cls.load):
            time.sleep(delay)
            return _orig(self, i)
        cls.load = load
    stage_export(compose(sys.argv[2:]))
""")




def make_checkpoint(cfg, path: Path) -> Path:
    """An sslcluster checkpoint of a freshly initialised method (what export reads: config + state_dict)."""
    torch.manual_seed(0)
    model = build_method(cfg)
    torch.save({CONFIG_KEY: to_plain(cfg), "state_dict": model.state_dict()}, path)
    return path


def shard_files(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("[0-9]*.npy"))


def finished_shards(folder: Path) -> int:
    """Shards an export counts as done: the shard and, written after it, its rows file (a kill between the two
    leaves a shard the resumed export recomputes)."""
    return sum((folder / "shards" / f"rows_{p.name}").exists() for p in shard_files(folder))


def kill_when_shards(proc: subprocess.Popen, folder: Path, n: int, timeout: float = 120.0) -> int:
    """SIGKILL ``proc`` once ``n`` shards exist; returns how many were finished after it died (``n - 1`` or more:
    shards are written in order, each before its rows file)."""
    t0 = time.monotonic()
    while len(shard_files(folder)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"export ended (rc {proc.returncode}) before {n} shards: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("export made no progress")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return finished_shards(folder)


def run_killed_export(tmp_path: Path, overrides: list[str], folder: Path, n: int, delay: float) -> int:
    script = tmp_path / "export_child.py"
    script.write_text(EXPORT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(delay), *overrides], cwd=str(tmp_path),
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return kill_when_shards(proc, folder, n)


@pytest.fixture
def ckpt(tiny, tmp_path):
    return make_checkpoint(compose(tiny), tmp_path / "tiny.ckpt")


def test_killed_export_is_refused_then_resumes_to_identical_bytes(tiny, tmp_path, ckpt, monkeypatch):
    common = tiny + [f"checkpoint={ckpt}", "export.splits=[test]", "export.shard_size=64", "export.batch_size=16",
              "clustering.features=backbone"]
    folder = tmp_path / "runs" / "killed" / "embeddings" / "test"
    done = run_killed_export(tmp_path, common + ["run.key=killed"], folder, n=2, delay=0.01)
    assert 1 <= done < 6  # 360 test digits in shards of 64: 6 shards; killed mid-export

    # nothing a later stage would take as complete
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "running"
    assert not (folder / "embeddings.npy").exists()
    with pytest.raises(SSLClusterError, match="interrupted"):
        read_embeddings(folder)
    with pytest.raises(SSLClusterError, match="status is 'running'"):
        stage_cluster(compose(tiny + ["run.key=killed", "clustering.features=backbone"]))

    # rerun: finished shards are not recomputed
    from sslcluster.data import sources

    loads: list[int] = []
    orig = sources.DigitsSource.load
    monkeypatch.setattr(sources.DigitsSource, "load", lambda self, i: (loads.append(i), orig(self, i))[1])
    stage_export(compose(common + ["run.key=killed"]))
    assert len(loads) == 360 - 64 * done and min(loads) == 64 * done
    resumed = read_embeddings(folder, with_labels=True)
    assert resumed.manifest["status"] == "complete" and resumed.manifest["resumed_shards"] == done
    assert not (folder / "shards").exists()

    # an uninterrupted export gives the same file, byte for byte
    stage_export(compose(common + ["run.key=whole"]))
    whole = tmp_path / "runs" / "whole" / "embeddings" / "test"
    assert (folder / "embeddings.npy").read_bytes() == (whole / "embeddings.npy").read_bytes()
    assert (folder / "index.csv").read_bytes() == (whole / "index.csv").read_bytes()
    assert resumed.array.shape[0] == 360 and np.isfinite(resumed.array).all()
    # and the cluster stage now takes it
    stage_cluster(compose(tiny + ["run.key=killed", "clustering.features=backbone"]))


def test_shards_of_a_different_export_are_not_reused(tiny, tmp_path, ckpt):
    common = tiny + [f"checkpoint={ckpt}", "export.shard_size=100", "export.keep_shards=true"]
    cfg = compose(common + ["run.key=r"])
    run = RunDir.create(tmp_path / "runs", "r")
    folder = export_split(cfg, run, "test", ckpt, "backbone")
    stamp = {p.name: p.stat().st_mtime_ns for p in shard_files(folder)}
    assert len(stamp) == 4
    # same plan, complete: shards kept -> a rerun reuses all of them
    export_split(cfg, run, "test", ckpt, "backbone")
    assert json.loads((folder / "manifest.json").read_text())["resumed_shards"] == 4
    # another checkpoint changes the plan: every shard is recomputed
    other = make_checkpoint(compose(common + ["seed=1", "backbone.module.width=8"]), tmp_path / "other.ckpt")
    torch.manual_seed(1)
    sd = torch.load(other, weights_only=False)
    sd["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in sd["state_dict"].items()}
    torch.save(sd, other)
    export_split(cfg, run, "test", other, "backbone")
    assert json.loads((folder / "manifest.json").read_text())["resumed_shards"] == 0
    assert all(p.stat().st_mtime_ns != stamp[p.name] for p in shard_files(folder))


def test_float16_export_and_projection_features(tiny, tmp_path, ckpt):
    run = RunDir.create(tmp_path / "runs", "f16")
    f32 = read_embeddings(export_split(compose(tiny), run, "test", ckpt, "backbone", name="b32")).array
    cfg16 = compose(tiny + ["export.dtype=float16", "export.shard_size=50"])
    es = read_embeddings(export_split(cfg16, run, "test", ckpt, "backbone", name="b16"))
    assert es.array.dtype == np.float16 and es.manifest["dtype"] == "float16" and es.array.shape == f32.shape
    np.testing.assert_allclose(es.array.astype(np.float32), f32, rtol=2e-3, atol=2e-3)
    proj = read_embeddings(export_split(compose(tiny), run, "test", ckpt, "projection", name="proj"))
    assert proj.array.shape == (360, 128) and proj.manifest["features"] == "projection"


def test_nan_features_are_refused_and_nothing_is_marked_complete(tiny, tmp_path, ckpt, monkeypatch):
    from sslcluster.ssl.methods.simclr import SimCLR

    run = RunDir.create(tmp_path / "runs", "nan")
    monkeypatch.setattr(SimCLR, "project", lambda self, x: torch.full((x.shape[0], 4), float("nan")))
    with pytest.raises(SSLClusterError, match="NaN or inf"):
        export_split(compose(tiny), run, "test", ckpt, "projection", name="proj")
    with pytest.raises(SSLClusterError, match="not 'complete'"):
        read_embeddings(run.embeddings_dir("proj"))


def test_export_progress_bar_reports_every_row(tiny, tmp_path, ckpt, monkeypatch):
    import sslcluster.stages.export as export_mod

    seen: dict[str, int] = {}

    class Bar:
        def __init__(self, total, initial, **kw):
            seen["total"], seen["n"] = total, initial

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, k):
            seen["n"] += k

    monkeypatch.setattr(export_mod, "progress", lambda total, desc, unit="it", initial=0: Bar(total, initial))
    run = RunDir.create(tmp_path / "runs", "bar")
    export_split(compose(tiny), run, "test", ckpt, "backbone")
    assert seen == {"total": 360, "n": 360}


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from sslcluster.config import compose
    from sslcluster.stages.export import export_split
    from sslcluster.store.rundir import RunDir

    out, root, runs = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = compose([f"run.root={runs}", "data=image_folder", f"data.source.root={root}", "data.image_size=64",
                   "data.num_workers=0", "data.scan.validate=header", "export.batch_size=256",
                   "export.shard_size=1000", "logger=none"])
    run = RunDir.create(runs, "mem")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    folder = export_split(cfg, run, "test", None, "pixels")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arr = np.load(folder / "embeddings.npy", mmap_mode="r")
    json.dump({"before": before, "after": after, "shape": list(arr.shape), "nbytes": int(arr.nbytes),
               "first": float(arr[0, 0]), "last": float(arr[-1, -1])}, open(out, "w"))
""")


@pytest.mark.slow
def test_export_of_20000_images_streams_within_a_memory_bound(tmp_path):
    """20,000 images of 16x16 exported as 64x64x3 raw pixels: the whole array is 983 MB in float32; the export's
    peak memory must grow by less than a quarter of that."""
    from PIL import Image

    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(5000):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i:05d}.png")
    script, out = tmp_path / "mem.py", tmp_path / "mem.json"
    script.write_text(MEMORY_SCRIPT)
    env = child_env()
    env["SSLCLUSTER_CACHE_DIR"] = str(tmp_path / "cache")
    subprocess.run([sys.executable, str(script), str(out), str(root), str(tmp_path / "runs")], check=True,
                   env=env, cwd=str(tmp_path), timeout=600)
    m = json.loads(out.read_text())
    assert m["shape"] == [20000, 64 * 64 * 3]
    whole = m["nbytes"]
    assert whole > 900e6
    growth = m["after"] - m["before"]
    print(f"export peak RSS growth {growth / 1e6:.0f} MB for a {whole / 1e6:.0f} MB array "
          f"(peak {m['after'] / 1e6:.0f} MB)")
    assert growth < whole / 4, (growth, whole)


CIFAR = REPO.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
if not CIFAR.exists():  # a worktree sits two levels below the project root; a plain checkout one
    CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason=f"CIFAR-10 JPEG archive not found at {CIFAR} (../shared/data)")
def test_cifar10_test_split_export_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """Export of CIFAR-10's test split (10,000 images) from a checkpoint, SIGKILLed mid-export and rerun,
    gives the same embeddings.npy as an uninterrupted export."""
    import tarfile

    monkeypatch.setenv("SSLCLUSTER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cifar10"
    with tarfile.open(CIFAR) as tar:
        tar.extractall(root, members=[m for m in tar.getmembers() if m.name.startswith("test/")], filter="data")
    common = [f"run.root={tmp_path / 'runs'}", "data=cifar10_folder", f"data.source.root={root}",
              "data.num_workers=0", "backbone.module.width=8", "backbone.module.depth=2", "logger=none",
              "export.splits=[test]", "export.shard_size=1000", "export.batch_size=250"]
    ckpt = make_checkpoint(compose(common), tmp_path / "cifar.ckpt")
    common.append(f"checkpoint={ckpt}")
    folder = tmp_path / "runs" / "killed" / "embeddings" / "test"
    done = run_killed_export(tmp_path, common + ["run.key=killed"], folder, n=3, delay=0.001)
    assert 2 <= done < 10
    assert json.loads((folder / "manifest.json").read_text())["status"] == "running"
    stage_export(compose(common + ["run.key=killed"]))
    stage_export(compose(common + ["run.key=whole"]))
    whole = tmp_path / "runs" / "whole" / "embeddings" / "test"
    a = read_embeddings(folder, with_labels=True)
    read_embeddings(whole)  # the uninterrupted export is a complete, valid set too
    assert a.array.shape[0] == 10_000 and a.manifest["resumed_shards"] == done
    assert sorted(set(a.index.labels.tolist())) == list(range(10))
    assert (folder / "embeddings.npy").read_bytes() == (whole / "embeddings.npy").read_bytes()
    assert (folder / "index.csv").read_bytes() == (whole / "index.csv").read_bytes()


def test_batches_never_cross_a_shard_boundary(tmp_path):
    from sslcluster.stages.export import ShardBatches
    from sslcluster.store.embeddings import ShardedWriter

    writer = ShardedWriter(tmp_path / "e", count=150, shard_size=64, dtype="float32", plan={})
    assert writer.n_shards == 3 and writer.shard_rows(2) == (128, 150)
    batches = list(ShardBatches(writer, [0, 2], batch_size=25))
    assert [(b[0], b[-1]) for b in batches] == [(0, 24), (25, 49), (50, 63), (128, 149)]
    assert len(ShardBatches(writer, [0, 2], batch_size=25)) == 4
    # resuming at shard 2 gives shard 2 the same batches as a whole export does
    assert list(ShardBatches(writer, [2], 25)) == [b for b in ShardBatches(writer, [0, 1, 2], 25) if b[0] >= 128]


def test_export_holds_one_shard_in_memory_not_the_data_set(tmp_path, monkeypatch):
    """Fast companion of the slow RSS test: numpy's allocations (traced by tracemalloc) during an export of 2,000
    images as 64x64x3 pixels (a 98 MB array) stay near one shard (200 rows, 9.8 MB), far below the array."""
    import tracemalloc

    from PIL import Image

    monkeypatch.setenv("SSLCLUSTER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2000):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    cfg = compose([f"run.root={tmp_path / 'runs'}", "data=image_folder", f"data.source.root={root}",
                   "data.image_size=64", "data.num_workers=0", "export.batch_size=100", "export.shard_size=200",
                   "logger=none"])
    run = RunDir.create(tmp_path / "runs", "mem")
    tracemalloc.start()
    try:
        folder = export_split(cfg, run, "all", None, "pixels")  # every image: no held-out split
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    arr = np.load(folder / "embeddings.npy", mmap_mode="r")
    assert arr.shape == (2000, 64 * 64 * 3)
    print(f"traced numpy peak {peak / 1e6:.1f} MB for a {arr.nbytes / 1e6:.1f} MB array")
    assert peak < arr.nbytes / 4, (peak, arr.nbytes)
