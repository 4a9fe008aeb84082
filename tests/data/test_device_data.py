"""The on-device data path: decoded-image cache, batches drawn by index, path choice and fallback, training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslcluster.data import device_data as D
from sslcluster.data.sources import DigitsSource, ImageFolderSource
from sslcluster.ssl.speed import apply_speed, split_trainer_config


@pytest.fixture
def folder(tmp_path) -> Path:
    """A small image folder: 2 classes x 6 images of mixed sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(6):
            size = (40, 30) if i % 2 else (32, 32)
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "train" / c / f"{i}.png")
    return root


def test_cache_written_once_atomically_and_reused(folder, tmp_path):
    src = ImageFolderSource(str(folder), "all")  # only train/: "train" would hold out a test split
    cache = tmp_path / "cache"
    arr, sizes, path, reused = D.load_or_build_cache(src, 32, 3, cache)
    assert not reused and path.is_file() and path.with_suffix(".json").is_file()
    assert arr.shape == (12, 3, 32, 32) and arr.dtype == np.uint8
    # whole images, aspect kept: the 40x30 ones at 32x24, top-left in their slot, zeros beside them
    assert sorted(map(tuple, sizes.tolist())) == [(24, 32)] * 6 + [(32, 32)] * 6
    wide = int(np.flatnonzero(sizes[:, 0] == 24)[0])
    assert not arr[wide, :, 24:].any()
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))
    # a 32x32 image is kept pixel for pixel
    first = np.asarray(Image.open(src.paths[0]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(arr[0], first)
    mtime = path.stat().st_mtime_ns
    again, sizes2, path2, reused = D.load_or_build_cache(src, 32, 3, cache)
    assert reused and path2 == path and path.stat().st_mtime_ns == mtime and np.array_equal(again, arr)
    assert np.array_equal(sizes2, sizes)
    # at a cap above every side, each image is kept pixel for pixel
    big, big_sizes, _, _ = D.load_or_build_cache(src, 64, 3, cache)
    assert big.shape == (12, 3, 32, 40) and tuple(big_sizes[wide]) == (30, 40)
    wide_img = np.asarray(Image.open(src.paths[wide]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(big[wide, :, :30, :40], wide_img)
    # another side, or a changed file, is another cache
    _, _, path3, reused = D.load_or_build_cache(src, 16, 3, cache)
    assert not reused and path3 != path
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(src.paths[3])
    os.utime(src.paths[3], ns=(1, 1))
    _, _, path4, reused = D.load_or_build_cache(ImageFolderSource(str(folder), "all"), 32, 3, cache)
    assert not reused and path4 != path


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    src = DigitsSource("train", image_size=8)
    monkeypatch.setattr(D.np, "save", lambda f, a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        D.load_or_build_cache(src, 8, 1, tmp_path / "c")
    assert not list((tmp_path / "c").iterdir())


def test_device_batches_draw_by_index_and_shard():
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1).expand(103, 1, 2, 2).contiguous()
    batches = D.DeviceBatches(images, batch_size=10, seed=3)
    assert len(batches) == 10
    epoch1 = list(batches)
    seen = torch.cat([idx for _, _, idx in epoch1])
    assert len(epoch1) == 10 and seen.unique().numel() == 100
    for imgs, sizes, idx in epoch1:
        assert imgs.dtype == torch.uint8 and torch.equal(imgs[:, 0, 0, 0].long(), idx)
        assert sizes.shape == (10, 2) and (sizes == 2).all()
    epoch2 = torch.cat([idx for _, _, idx in batches])
    assert not torch.equal(seen, epoch2)  # a fresh permutation each epoch
    r0 = D.DeviceBatches(images, 10, seed=3, rank=0, world_size=2)
    r1 = D.DeviceBatches(images, 10, seed=3, rank=1, world_size=2)
    a, b = torch.cat([i for _, _, i in r0]), torch.cat([i for _, _, i in r1])
    assert len(r0) == 5 and not set(a.tolist()) & set(b.tolist())


def _data(compose, tmp_path, *over):
    cfg = compose(["data.batch_size=64", f"data.device_cache.dir={tmp_path / 'cache'}", *over])
    from sslcluster.stages.common import build_source

    return D.build_pretrain_data(cfg, build_source(cfg, "train"))


def test_path_choice_and_one_line_fallback(compose, tmp_path, capsys):
    cpu = torch.device("cpu")
    assert _data(compose, tmp_path).choose(cpu) == ("cpu", None)  # auto off CUDA: CPU path, silently
    assert _data(compose, tmp_path, "data.pipeline=device").choose(cpu) == ("device", None)
    data = _data(compose, tmp_path, "data.pipeline=device", "data.device_cache.budget_gb=0.0001")
    data.setup("fit")
    assert data.used == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit" in err and "0.00 GB" in err and "budget_gb=0.0001" in err
    data = _data(compose, tmp_path, "data.pipeline=device",
                 "method.default_views._target_=lightly.transforms.SwaVTransform")
    assert data.choose(cpu)[0] == "cpu" and "no GPU equivalent" in data.choose(cpu)[1]
    with pytest.raises(Exception, match="data.pipeline"):
        _data(compose, tmp_path, "data.pipeline=gpu")


def test_device_path_batches_become_views(compose, tmp_path):
    data = _data(compose, tmp_path, "data.pipeline=device")
    data.setup("fit")
    assert data.used == "device" and data.cache_path is not None and data.cache_path.is_file()
    batch = next(iter(data.train_dataloader()))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (64, 1, 16, 16)
    views, idx = data.on_after_batch_transfer(batch, 0)
    assert len(views) == 2 and views[0].shape == (64, 1, 16, 16) and views[0].dtype == torch.float32
    assert torch.equal(idx, batch[2])


@pytest.mark.parametrize("method,shapes", [("byol", [16] * 2), ("barlowtwins", [16] * 2), ("vicreg", [16] * 2),
                                           ("dino", [16] * 2 + [12] * 2)])
def test_each_methods_default_views_on_the_device_path(compose, tmp_path, method, shapes):
    """Every method's digits views (DINO's multi-crop included) come from the device path, no CPU fallback."""
    data = _data(compose, tmp_path, "data.pipeline=device", f"method={method}")
    data.setup("fit")
    assert data.used == "device"
    batch = next(iter(data.train_dataloader()))
    views, _ = data.on_after_batch_transfer(batch, 0)
    assert [v.shape[-1] for v in views] == shapes and all(v.shape[:2] == (64, 1) for v in views)


def test_pretrain_trains_on_the_device_path(compose, tiny, tmp_path, monkeypatch):
    from sslcluster.pipeline import stage_pretrain

    calls = []
    original = D.PretrainData.on_after_batch_transfer

    def spy(self, batch, idx):
        out = original(self, batch, idx)
        calls.append((self.used, type(out[0]).__name__))
        return out

    monkeypatch.setattr(D.PretrainData, "on_after_batch_transfer", spy)
    stage_pretrain(compose(tiny + ["run.key=dev", "data.pipeline=device",
                                   f"data.device_cache.dir={tmp_path / 'cache'}", "trainer.speed.channels_last=true"]))
    assert (tmp_path / "runs" / "dev" / "checkpoints" / "last.ckpt").is_file()
    assert calls and all(c == ("device", "list") for c in calls)
    assert len([p for p in (tmp_path / "cache").glob("*.npy") if not p.name.endswith(".sizes.npy")]) == 1


def test_speed_options(monkeypatch):
    kwargs, speed = split_trainer_config({"max_epochs": 1, "speed": {"channels_last": True, "compile": True}})
    assert "speed" not in kwargs and kwargs["max_epochs"] == 1 and speed["compile_mode"] == "default"
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(type(self).__name__))

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 3)

    m = apply_speed(M(), speed)
    assert m.backbone.weight.is_contiguous(memory_format=torch.channels_last) and compiled == ["Conv2d"]
    _, off = split_trainer_config({"max_epochs": 1})
    assert off["compile"] is False and off["channels_last"] is False


def test_compile_reaches_the_methods_compile_targets(monkeypatch, compose):
    """MoCo's momentum backbone runs a forward pass per step as costly as the query's: both are compiled."""
    from sslcluster.stages.pretrain import build_method

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    moco = build_method(compose(["method=moco", "data.batch_size=64", "method.module.queue_size=128"]))
    apply_speed(moco, {"compile": True})
    assert compiled == [moco.backbone, moco.backbone_momentum]
    compiled.clear()
    simclr = build_method(compose([]))
    apply_speed(simclr, {"compile": True})
    assert compiled == [simclr.backbone]


def test_device_batches_follow_the_trainers_epoch():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    epoch = {"n": 3}
    resumed = D.DeviceBatches(images, 10, seed=0, epoch_fn=lambda: epoch["n"])
    fresh = D.DeviceBatches(images, 10, seed=0)
    for _ in range(3):
        list(fresh)
    assert torch.equal(torch.cat([i for _, _, i in resumed]), torch.cat([i for _, _, i in fresh]))


@pytest.mark.parametrize("trainer,fast", [("cpu", False), ("gpu", True)])
def test_trainer_configs_speed_defaults_per_device(compose, trainer, fast):
    import inspect

    import pytorch_lightning as pl

    kwargs, speed = split_trainer_config(compose([f"trainer={trainer}"]).trainer)
    assert set(kwargs) <= set(inspect.signature(pl.Trainer.__init__).parameters)  # all real Trainer arguments
    assert speed["channels_last"] is fast and speed["compile"] is fast
    assert (kwargs["precision"] == "bf16-mixed") is fast and kwargs["benchmark"] is fast


def test_epoch_orders_are_independent_across_seeds_and_shared_by_both_paths():
    """Each epoch's order comes from a hash of (seed, epoch): runs seeded s and s + 1 share no epoch order
    (with seed + epoch, epoch e + 1 of seed s was epoch e of seed s + 1), and the CPU path's sampler draws the
    device path's order, so the two paths can be compared on the same batches."""
    images = torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1)

    def orders(seed: int, epochs: int = 4) -> list[torch.Tensor]:
        b = D.DeviceBatches(images, 20, seed=seed)
        return [torch.cat([i for _, _, i in b]) for _ in range(epochs)]

    s0, s1 = orders(5), orders(6)
    assert not any(torch.equal(a, b) for a in s0 for b in s1)
    sampler = D.EpochOrder(200, seed=5)
    for epoch in range(4):
        assert torch.equal(torch.tensor(list(sampler)), s0[epoch])
