"""The pretraining data: CPU workers with lightly's transforms, or the whole train split on the device.

``data.pipeline`` chooses:

- ``cpu``: the :class:`~sslcluster.data.datasets.ViewsDataset` (PIL images, the ``augmentation.views`` transform)
  in DataLoader workers, as before.
- ``device``: the train split decoded once to uint8 (N, C, H, W) (each image whole, aspect kept, at its own
  size up to a cap on its long side, ``data.device_cache.max_side``, default 6 x the training side, lowered to
  fit the memory budget; zero-padded to the largest; its (h, w) kept beside it) (a cache file, written
  atomically, reused by later runs; under DDP written once per node by its local rank 0 and read memory-mapped by
  the node's other processes, which wait for it: :func:`node_cache`), moved to the training device, batches drawn there by index, and augmented there by
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

import contextlib
import hashlib
import math
import os
import sys
import time
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
from sslcluster.distributed import STARTED, any_rank, min_over_ranks, process_group_size, untimed_group
from sslcluster.distributed import local_rank as local_rank_of_process
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build
from sslcluster.store.io import atomic_path, write_json, write_text

PIPELINES = ("cpu", "device", "auto")


# -- decoded-image cache ---------------------------------------------------------------------------------------

#: default cap on the long side of a cached image, in multiples of ``data.image_size``: lightly's smallest crop
#: (``min_scale`` 0.08) spans sqrt(0.08) = 0.28 of an image's side, so even 4x the training side keeps more than
#: the training side's pixels across it; but the views' sharpness against lightly's (PIL, full image) still
#: rises up to 6x and stops there (``benchmarks/fidelity.py sharpness --max-side``, benchmarks/RESULTS.md)
DEFAULT_SIDE_FACTOR = 6


def fit_uint8(img: Image.Image, max_side: int, channels: int) -> np.ndarray:
    """An image as (C, h, w) uint8, its aspect ratio kept: at its own size when its long side is at most
    ``max_side`` (pixel for pixel), else downscaled (Lanczos, antialiased) to a long side of ``max_side``."""
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if max(w, h) > max_side:
        s = max_side / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def to_square_uint8(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """An image as (C, size, size) uint8: shorter side resized to ``size`` (bilinear, antialiased), centre crop.
    Images already ``size`` x ``size`` are kept pixel for pixel. (Not the device cache, which keeps the whole
    image: :func:`fit_uint8`.)"""
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


def cache_key(source: ImageSource, max_side: int, channels: int) -> str:
    """A key that changes when the images can have: the source type, its paths, each file's size and mtime,
    the first and last decoded image, the side cap and channels."""
    h = hashlib.sha256()
    h.update(f"{type(source).__name__}|{len(source)}|{max_side}|{channels}|v2".encode())
    for p in source.paths:
        h.update(os.fsencode(p))  # file names need not be UTF-8
        if os.path.isfile(p):
            st = os.stat(p)
            h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    for i in {0, len(source) - 1}:
        h.update(fit_uint8(source.load(i), max_side, channels).tobytes())
    return h.hexdigest()[:24]


def decode_source(source: ImageSource, max_side: int, channels: int, workers: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """All images of ``source`` (:func:`fit_uint8`), each at the top-left of a zero-padded slot as large as the
    largest (threads: PIL decodes without the GIL).

    Returns:
        images (N, C, H, W) uint8 with H, W the largest stored height and width; sizes (N, 2) int64 (h, w).
    """
    n = len(source)
    parts: list[np.ndarray | None] = [None] * n

    def one(i: int) -> None:
        parts[i] = fit_uint8(source.load(i), max_side, channels)

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(n), chunksize=256))
    else:
        for i in range(n):
            one(i)
    sizes = np.array([p.shape[1:] for p in parts], dtype=np.int64).reshape(n, 2)  # type: ignore[union-attr]
    out = np.zeros((n, channels, int(sizes[:, 0].max()), int(sizes[:, 1].max())), dtype=np.uint8)
    for i, p in enumerate(parts):
        out[i, :, :p.shape[1], :p.shape[2]] = p  # type: ignore[union-attr]
        parts[i] = None
    return out, sizes


def _sidecars(path: Path) -> tuple[Path, Path, Path]:
    """The sizes array, the JSON sidecar (written last: its presence means complete) and the failure note of the
    cache ``path``."""
    return path.with_suffix(".sizes.npy"), path.with_suffix(".json"), path.with_suffix(".failed")


def read_cache(path: Path, count: int, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The complete cache at ``path`` ((N, C, H, W) uint8 memory-mapped, (N, 2) sizes) when it holds ``count``
    images of ``channels`` channels; None when it is absent, unfinished or of another shape."""
    sizes_path, meta, _ = _sidecars(path)
    if not (path.is_file() and sizes_path.is_file() and meta.is_file()):
        return None
    try:
        arr = np.load(path, mmap_mode="r")
        sizes = np.load(sizes_path)
    except (OSError, ValueError):
        return None
    if (arr.ndim == 4 and arr.shape[:2] == (count, channels) and arr.dtype == np.uint8
            and sizes.shape == (count, 2)):
        return arr, sizes
    return None


def _cache_path(source: ImageSource, max_side: int, channels: int, cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / f"{cache_key(source, max_side, channels)}.npy"


def _build_cache(source: ImageSource, max_side: int, channels: int, path: Path,
                 workers: int) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    got = read_cache(path, len(source), channels)
    if got is not None:
        return got[0], got[1], path, True
    sizes_path, meta, _ = _sidecars(path)
    arr, sizes = decode_source(source, max_side, channels, workers)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    with atomic_path(sizes_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, sizes)
    write_json(meta, {"key": path.stem, "count": len(source), "shape": list(arr.shape), "dtype": "uint8",
                      "max_side": max_side, "source": type(source).__name__, "first_path": source.paths[0],
                      "status": "complete"})
    return arr, sizes, path, False


def load_or_build_cache(source: ImageSource, max_side: int, channels: int, cache_dir: str | Path,
                        workers: int = 1) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    """The decoded split from ``cache_dir/<key>.npy`` (and ``<key>.sizes.npy``), decoding and writing it
    (atomically: temporary names, then renames; a ``.json`` sidecar last) when absent. One process; several
    processes on a node share one cache through :func:`node_cache`.

    Returns:
        (N, C, H, W) uint8 images (memory-mapped when read back), (N, 2) int64 sizes (h, w) of each image in
        its slot, the cache path, whether it was reused.
    """
    return _build_cache(source, max_side, channels, _cache_path(source, max_side, channels, cache_dir), workers)


#: how long (seconds) a process that is not its node's local rank 0 waits for the cache when no torch.distributed
#: process group links the processes (``data.device_cache.wait_s``); with one, it waits as long as decoding takes
DEFAULT_WAIT_S = 3600.0


def node_cache(source: ImageSource, max_side: int, channels: int, cache_dir: str | Path, workers: int = 1,
               local_rank: int = 0, group: object | None = None,
               wait_s: float = DEFAULT_WAIT_S) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    """:func:`load_or_build_cache` once per node: local rank 0 decodes and writes the cache (or reuses it), the
    node's other processes wait for it and read it memory-mapped; none of them decodes.

    With ``group`` (a gloo group over every rank of a torch.distributed launch, e.g.
    :func:`sslcluster.distributed.untimed_group`) every rank waits in one collective until each node's local rank 0
    is done, and learns there whether one failed. Without, the others poll the cache folder until the cache is
    complete, local rank 0 leaves a ``<key>.failed`` note (its error) or ``wait_s`` seconds have passed.

    Returns:
        as :func:`load_or_build_cache` (``reused`` is True for every process but the one that decoded).
    """
    path = _cache_path(source, max_side, channels, cache_dir)
    failed = _sidecars(path)[2]
    if group is not None:
        error: BaseException | None = None
        result = None
        if local_rank == 0:
            try:
                result = _build_cache(source, max_side, channels, path, workers)
            except BaseException as e:  # noqa: BLE001  (told to the other ranks, then raised)
                error = e
        some_failed = any_rank(error is not None, group)
        if error is not None:
            raise error
        if some_failed:
            raise SSLClusterError(f"the decoded-image cache {path}: local rank 0 of a node failed to write it (its "
                                  "error is in that process's output)")
        if result is not None:
            return result
        got = read_cache(path, len(source), channels)
        if got is None:
            raise SSLClusterError(f"the decoded-image cache {path} is not there after local rank 0 wrote it: "
                                  f"data.device_cache.dir={cache_dir} must be a folder every process of a node sees")
        return got[0], got[1], path, True
    if local_rank == 0:
        with contextlib.suppress(FileNotFoundError):
            failed.unlink()  # an earlier launch's
        try:
            return _build_cache(source, max_side, channels, path, workers)
        except BaseException as e:
            with contextlib.suppress(OSError):
                write_text(failed, f"{type(e).__name__}: {e}\n")
            raise
    deadline = time.monotonic() + wait_s
    while True:
        got = read_cache(path, len(source), channels)
        if got is not None:
            return got[0], got[1], path, True
        with contextlib.suppress(OSError):
            if failed.stat().st_mtime >= STARTED:  # this launch's, not an earlier one's
                raise SSLClusterError(f"the decoded-image cache {path}: local rank 0 failed to write it: "
                                      f"{failed.read_text().strip()}")
        if time.monotonic() >= deadline:
            raise SSLClusterError(f"data.device_cache.wait_s={wait_s:g}: local rank 0 did not write the decoded-image "
                                  f"cache {path} in that time (data.device_cache.dir must be a folder every process "
                                  "of a node sees)")
        time.sleep(0.2)


# -- the order of each epoch -----------------------------------------------------------------------------------

def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order in a run seeded ``seed``: a hash of the pair, so runs with seeds s
    and s + 1 share no epoch order (``seed + epoch`` would share all but one)."""
    digest = hashlib.sha256(f"sslcluster-epoch-order|{int(seed)}|{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order (n,) int64 of the ``n`` images in epoch ``epoch`` of a run seeded ``seed`` (both paths)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class EpochOrder(torch.utils.data.Sampler[int]):
    """The CPU path's sampler: the same per-epoch order as :class:`DeviceBatches` (so the two paths can be
    compared on the same batches). ``epoch_fn`` as in :class:`DeviceBatches`."""

    def __init__(self, n: int, seed: int, epoch_fn: Callable[[], int] | None = None) -> None:
        self.n, self.seed, self.epoch, self.epoch_fn = n, seed, 0, epoch_fn

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        self.epoch += 1
        return iter(epoch_permutation(self.n, self.seed, epoch).tolist())


# -- batches drawn on the device ---------------------------------------------------------------------------------

class DeviceBatches:
    """Batches of a uint8 tensor (N, C, H, W) held on its device, drawn by index there.

    Each pass (epoch) is a fresh permutation (:func:`epoch_permutation` of the seed and the epoch, the same on
    every rank), sharded ``rank::world_size``, drop-last. Yields ``(images (B, C, H, W) uint8, sizes (B, 2)
    int64, indices (B,) int64)``, all on the images' device; ``sizes`` is each image's (h, w) at the top-left
    of its padded slot (default: every image fills it).
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epoch_fn: Callable[[], int] | None = None,
                 sizes: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise SSLClusterError("DeviceBatches needs uint8 images (N, C, H, W)")
        self.images = images
        if sizes is None:
            sizes = torch.tensor(images.shape[2:], dtype=torch.long).expand(len(images), 2)
        self.sizes = sizes.to(images.device, torch.long).contiguous()
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        self.epoch += 1
        n = len(self)
        perm = epoch_permutation(len(self.images), self.seed, epoch)[self.rank::self.world_size][: n * self.batch_size]
        perm = perm.to(self.images.device, non_blocking=True)
        for k in range(n):
            idx = perm[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.images.index_select(0, idx), self.sizes.index_select(0, idx), idx


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
        self.image_size = int(data.image_size)
        #: cap on the long side of a cached image (null: DEFAULT_SIDE_FACTOR x data.image_size); lowered in
        #: :meth:`choose` to what the memory budget holds
        self.max_side = int(_cfg_get(dc, "max_side", DEFAULT_SIDE_FACTOR * self.image_size))
        if self.max_side < self.image_size:
            raise SSLClusterError(f"data.device_cache.max_side={self.max_side} is below data.image_size="
                                  f"{self.image_size}")
        self.cache_side = self.max_side
        self.budget_gb = dc.get("budget_gb") if dc is not None else None
        #: seconds a process other than its node's local rank 0 waits for the cache without a process group
        wait_s = _cfg_get(dc, "wait_s", DEFAULT_WAIT_S)
        try:
            self.wait_s = float(wait_s)
        except (TypeError, ValueError):
            self.wait_s = float("nan")
        if not self.wait_s > 0:
            raise SSLClusterError(f"data.device_cache.wait_s={wait_s!r} must be a positive number of seconds")
        aug = cfg.get("augmentation") if hasattr(cfg, "get") else None
        #: 8-bit rounding after each op of the device path's views (augmentation.quantize)
        self.quantize = bool(_cfg_get(aug, "quantize", False))
        speed = cfg.trainer.get("speed") if hasattr(cfg.trainer, "get") else None
        self.channels_last = bool(_cfg_get(speed, "channels_last", False))
        self.compile = bool(_cfg_get(speed, "compile", False))  # also fuses the augmentation's kernels
        self.gpu_transform: torch.nn.Module | None = None
        self.images: torch.Tensor | None = None
        self.sizes: torch.Tensor | None = None
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
            self.gpu_transform = from_views_config(self.cfg.augmentation.views, quantize=self.quantize)
        except SSLClusterError as e:
            return "cpu", str(e)
        channels = int(self.cfg.data.channels)
        budget, where = device_budget_bytes(device, self.budget_gb)
        # the largest side cap whose worst case (every image a full square slot) fits the budget
        fits = int(math.isqrt(max(0, budget) // max(1, len(self.source) * channels)))
        self.cache_side = min(self.max_side, fits)
        if self.cache_side < self.image_size:
            need = len(self.source) * channels * self.image_size ** 2
            return "cpu", (f"the train split ({len(self.source)} images, {need / 1e9:.2f} GB as uint8 at "
                           f"{self.image_size}x{self.image_size}) does not fit the device budget "
                           f"({budget / 1e9:.2f} GB: {where})")
        return "device", None

    def setup(self, stage: str | None = None) -> None:
        """Choose the device or CPU data path once; on the device path load the uint8 image cache onto the device.

        Under DDP every process takes the same path and cache side (the smallest any process can hold), and the
        cache is decoded once per node, by its local rank 0, and read by the node's other processes
        (:func:`node_cache`)."""
        if self.used is not None:
            return
        device = self._device()
        self.used, reason = self.choose(device)
        if reason is not None:
            fallback_message(reason)
        if process_group_size() > 1 and self.pipeline != "cpu":
            with untimed_group() as group:
                side = min_over_ranks(self.cache_side if self.used == "device" else 0, group)
                if self.used == "device" and side == 0:
                    self.used = "cpu"
                    fallback_message("another process of this launch cannot use the device path (its line says why)")
                if self.used == "device":
                    self.cache_side = side
                    self._load(device, group)
        elif self.used == "device":
            self._load(device, None)

    def _load(self, device: torch.device, group: object | None) -> None:
        trainer = getattr(self, "trainer", None)
        rank = int(trainer.local_rank) if trainer is not None else local_rank_of_process()
        channels = int(self.cfg.data.channels)
        arr, sizes, self.cache_path, _ = node_cache(self.source, self.cache_side, channels, self.cache_dir,
                                                    workers=max(1, int(self.cfg.data.num_workers)),
                                                    local_rank=rank, group=group, wait_s=self.wait_s)
        self.images = torch.from_numpy(np.array(arr, copy=True)).to(device)  # read the cache in
        self.sizes = torch.from_numpy(np.asarray(sizes, dtype=np.int64)).to(device)
        assert self.gpu_transform is not None
        self.gpu_transform.to(device)
        if self.compile:
            self.gpu_transform.compile_apply()

    # loaders ----------------------------------------------------------------------------------------------
    def train_dataloader(self) -> Any:
        """Batches of the train split: device-resident uint8 batches, or a DataLoader of augmented views on CPU."""
        if self.used is None:
            self.setup("fit")
        trainer = getattr(self, "trainer", None)
        epoch_fn: Callable[[], int] | None = (lambda: trainer.current_epoch) if trainer is not None else None
        if self.used == "device":
            assert self.images is not None
            rank = trainer.global_rank if trainer is not None else 0
            world = trainer.world_size if trainer is not None else 1
            return DeviceBatches(self.images, self.batch_size, seed=int(self.cfg.seed), rank=rank,
                                 world_size=world, epoch_fn=epoch_fn, sizes=self.sizes)
        views = build(self.cfg.augmentation.views)
        workers = int(self.cfg.data.num_workers)
        order = EpochOrder(len(self.source), int(self.cfg.seed), epoch_fn=epoch_fn)
        return DataLoader(ViewsDataset(self.source, views), batch_size=self.batch_size, sampler=order,
                          drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=self._device().type == "cuda")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device path: (uint8 images (B, C, H, W), sizes (B, 2), indices) -> ([view (B, C, S, S) float, ...],
        indices)."""
        if self.used != "device":
            return batch
        images, sizes, idx = batch
        assert self.gpu_transform is not None
        with torch.no_grad():
            views = self.gpu_transform(images, sizes=sizes)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, idx


def build_pretrain_data(cfg: DictConfig, source: ImageSource) -> PretrainData:
    """The hook ``stages.pretrain`` calls: the train split's DataModule for ``trainer.fit(datamodule=...)``."""
    return PretrainData(cfg, source)


__all__ = ["PretrainData", "DeviceBatches", "EpochOrder", "build_pretrain_data", "load_or_build_cache", "node_cache",
           "read_cache", "DEFAULT_WAIT_S",
           "decode_source", "cache_key", "device_budget_bytes", "fit_uint8", "to_square_uint8", "epoch_seed",
           "epoch_permutation", "PIPELINES", "DEFAULT_SIDE_FACTOR"]
