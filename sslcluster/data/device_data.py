"""The pretraining data: CPU workers with lightly's transforms, or the whole train split on the device.

``data.pipeline`` chooses:

- ``cpu``: the :class:`~sslcluster.data.datasets.ViewsDataset` (PIL images, the ``augmentation.views`` transform)
  in DataLoader workers, as before.
- ``device``: the train split decoded once to uint8 (N, C, S, S) (a cache file, written atomically, reused by
  later runs), moved to the training device, batches drawn there by index, and augmented there by
  :mod:`sslcluster.data.gpu_augment` with the same ``augmentation.views`` config, right after the (no-op) batch
  transfer. On a CPU trainer "the device" is CPU memory.
- ``auto``: ``device`` when training on CUDA, the views config has a GPU equivalent and the split fits the
  budget; ``cpu`` otherwise.

When the device path is asked for but cannot be used (too large for ``data.device_cache.budget_gb`` / the
free device memory, or a transform with no GPU equivalent), training falls back to the CPU path and says why
in one line on stderr.

Both paths yield the same batch structure to the method: ``(views, indices)`` with views a list of
(B, C, S, S) float tensors.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from sslcluster.data.datasets import ViewsDataset
from sslcluster.data.sources import ImageSource
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build
from sslcluster.store.io import atomic_path, write_json

PIPELINES = ("cpu", "device", "auto")


# -- decoded-image cache ---------------------------------------------------------------------------------------

def to_square_uint8(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """An image as (C, size, size) uint8: shorter side resized to ``size`` (bilinear, antialiased), centre crop.
    Images already ``size`` x ``size`` are kept pixel for pixel."""
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if (w, h) != (size, size):
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def cache_key(source: ImageSource, size: int, channels: int) -> str:
    """A key that changes when the images can have: the source type, its paths, each file's size and mtime,
    the first and last decoded image, the side and channels."""
    h = hashlib.sha256()
    h.update(f"{type(source).__name__}|{len(source)}|{size}|{channels}|v1".encode())
    for p in source.paths:
        h.update(p.encode())
        if os.path.isfile(p):
            st = os.stat(p)
            h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    for i in {0, len(source) - 1}:
        h.update(to_square_uint8(source.load(i), size, channels).tobytes())
    return h.hexdigest()[:24]


def decode_source(source: ImageSource, size: int, channels: int, workers: int = 1) -> np.ndarray:
    """All images of ``source`` as (N, C, size, size) uint8 (threads: PIL decodes without the GIL)."""
    out = np.empty((len(source), channels, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = to_square_uint8(source.load(i), size, channels)

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(source)), chunksize=256))
    else:
        for i in range(len(source)):
            one(i)
    return out


def load_or_build_cache(source: ImageSource, size: int, channels: int, cache_dir: str | Path,
                        workers: int = 1) -> tuple[np.ndarray, Path, bool]:
    """The decoded split from ``cache_dir/<key>.npy``, decoding and writing it (atomically: temporary name, then
    rename; a ``.json`` sidecar after it) when absent.

    Returns:
        (N, C, size, size) uint8 array (memory-mapped when read back), the cache path, whether it was reused.
    """
    key = cache_key(source, size, channels)
    path = Path(cache_dir).expanduser() / f"{key}.npy"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (len(source), channels, size, size) and arr.dtype == np.uint8:
            return arr, path, True
    arr = decode_source(source, size, channels, workers)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    write_json(meta, {"key": key, "count": len(source), "shape": list(arr.shape), "dtype": "uint8",
                      "source": type(source).__name__, "first_path": source.paths[0], "status": "complete"})
    return arr, path, False


# -- batches drawn on the device ---------------------------------------------------------------------------------

class DeviceBatches:
    """Batches of a uint8 tensor (N, C, H, W) held on its device, drawn by index there.

    Each pass (epoch) is a fresh permutation from ``seed + epoch`` (the same on every rank), sharded
    ``rank::world_size``, drop-last. Yields ``(images (B, C, H, W) uint8, indices (B,) int64)``, both on the
    images' device.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epoch_fn: Callable[[], int] | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise SSLClusterError("DeviceBatches needs uint8 images (N, C, H, W)")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        #: where the epoch number comes from (the trainer's, so a resumed run continues the sequence); default:
        #: a count of passes
        self.epoch_fn = epoch_fn

    def __len__(self) -> int:
        return (len(self.images) // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        g = torch.Generator().manual_seed(self.seed + epoch)
        self.epoch += 1
        n = len(self)
        perm = torch.randperm(len(self.images), generator=g)[self.rank::self.world_size][: n * self.batch_size]
        perm = perm.to(self.images.device, non_blocking=True)
        for k in range(n):
            idx = perm[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.images.index_select(0, idx), idx


# -- choosing the path ---------------------------------------------------------------------------------------

def device_budget_bytes(device: torch.device, budget_gb: float | None) -> tuple[int, str]:
    """Bytes the uint8 data set may take on ``device``, and a phrase saying where the figure comes from."""
    if budget_gb is not None:
        return int(float(budget_gb) * 1e9), f"data.device_cache.budget_gb={budget_gb}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free), f"half of the {free / 1e9:.1f} GB free on {device}"
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 0
    return int(0.25 * avail), f"a quarter of the {avail / 1e9:.1f} GB of available memory"


def fallback_message(reason: str) -> None:
    """The one line that says why training uses the CPU path."""
    print(f"sslcluster: data.pipeline: using the CPU pipeline: {reason}", file=sys.stderr, flush=True)


def _cfg_get(node: Any, key: str, default: Any) -> Any:
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else default
    return default if value is None else value


class PretrainData(pl.LightningDataModule):
    """The train split for pretraining, on the path ``data.pipeline`` chooses (decided in :meth:`setup`, when
    the training device is known).

    Args:
        cfg: the run config (``data``, ``augmentation``, ``seed``, ``trainer.speed``).
        source: the train split.
    """

    def __init__(self, cfg: DictConfig, source: ImageSource) -> None:
        super().__init__()
        self.cfg = cfg
        self.source = source
        data = cfg.data
        self.pipeline = str(_cfg_get(data, "pipeline", "cpu"))
        if self.pipeline not in PIPELINES:
            raise SSLClusterError(f"data.pipeline={self.pipeline!r} is not one of {', '.join(PIPELINES)}")
        self.batch_size = int(data.batch_size)
        if len(source) < self.batch_size:
            raise SSLClusterError(f"data.batch_size={self.batch_size} is larger than the train split "
                                  f"({len(source)} images)")
        dc = data.get("device_cache") if hasattr(data, "get") else None
        self.cache_dir = str(_cfg_get(dc, "dir", ".cache/sslcluster"))
        self.cache_size = int(_cfg_get(dc, "size", data.image_size))
        self.budget_gb = dc.get("budget_gb") if dc is not None else None
        speed = cfg.trainer.get("speed") if hasattr(cfg.trainer, "get") else None
        self.channels_last = bool(_cfg_get(speed, "channels_last", False))
        self.compile = bool(_cfg_get(speed, "compile", False))  # also fuses the augmentation's kernels
        self.gpu_transform: torch.nn.Module | None = None
        self.images: torch.Tensor | None = None
        self.used: str | None = None  # "cpu" or "device" once set up
        self.cache_path: Path | None = None

    # which path -------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def choose(self, device: torch.device) -> tuple[str, str | None]:
        """("device" | "cpu", reason for the CPU path or None)."""
        if self.pipeline == "cpu":
            return "cpu", None
        if self.pipeline == "auto" and device.type != "cuda":
            return "cpu", None  # quietly: the CPU path is the default off CUDA
        from sslcluster.data.gpu_augment import from_views_config

        try:
            self.gpu_transform = from_views_config(self.cfg.augmentation.views)
        except SSLClusterError as e:
            return "cpu", str(e)
        channels = int(self.cfg.data.channels)
        need = len(self.source) * channels * self.cache_size ** 2
        budget, where = device_budget_bytes(device, self.budget_gb)
        if need > budget:
            return "cpu", (f"the train split ({len(self.source)} images, {need / 1e9:.2f} GB as uint8 at "
                           f"{self.cache_size}x{self.cache_size}) does not fit the device budget "
                           f"({budget / 1e9:.2f} GB: {where})")
        return "device", None

    def setup(self, stage: str | None = None) -> None:
        if self.used is not None:
            return
        device = self._device()
        self.used, reason = self.choose(device)
        if reason is not None:
            fallback_message(reason)
        if self.used == "device":
            channels = int(self.cfg.data.channels)
            arr, self.cache_path, _ = load_or_build_cache(self.source, self.cache_size, channels, self.cache_dir,
                                                          workers=max(1, int(self.cfg.data.num_workers)))
            self.images = torch.from_numpy(np.array(arr, copy=True)).to(device)  # read the cache in
            assert self.gpu_transform is not None
            self.gpu_transform.to(device)
            if self.compile:
                self.gpu_transform.compile_apply()

    # loaders ----------------------------------------------------------------------------------------------
    def train_dataloader(self) -> Any:
        if self.used is None:
            self.setup("fit")
        if self.used == "device":
            assert self.images is not None
            trainer = getattr(self, "trainer", None)
            rank = trainer.global_rank if trainer is not None else 0
            world = trainer.world_size if trainer is not None else 1
            return DeviceBatches(self.images, self.batch_size, seed=int(self.cfg.seed), rank=rank,
                                 world_size=world, epoch_fn=(lambda: trainer.current_epoch) if trainer else None)
        views = build(self.cfg.augmentation.views)
        workers = int(self.cfg.data.num_workers)
        return DataLoader(ViewsDataset(self.source, views), batch_size=self.batch_size, shuffle=True,
                          drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=self._device().type == "cuda")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device path: (uint8 images (B, C, H, W), indices) -> ([view (B, C, S, S) float, ...], indices)."""
        if self.used != "device":
            return batch
        images, idx = batch
        assert self.gpu_transform is not None
        with torch.no_grad():
            views = self.gpu_transform(images)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, idx


def build_pretrain_data(cfg: DictConfig, source: ImageSource) -> PretrainData:
    """The hook ``stages.pretrain`` calls: the train split's DataModule for ``trainer.fit(datamodule=...)``."""
    return PretrainData(cfg, source)


__all__ = ["PretrainData", "DeviceBatches", "build_pretrain_data", "load_or_build_cache", "decode_source",
           "cache_key", "device_budget_bytes", "to_square_uint8", "PIPELINES"]
