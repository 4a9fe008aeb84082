"""Stage 2: embeddings of a data split from a checkpoint (or raw pixels, for the baseline).

Writes ``embeddings/<name>/`` (array, index, manifest; see :mod:`sslcluster.store.embeddings`) in shards of
``export.shard_size`` rows: memory holds one shard at a time, an interrupted export resumes from its finished
shards, and the manifest says ``complete`` only once ``embeddings.npy`` and ``index.csv`` are on disk.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from sslcluster.data.datasets import ImageDataset
from sslcluster.data.folders import report_skipped
from sslcluster.data.sources import labels_or_unknown
from sslcluster.distributed import run_key_in_env
from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress
from sslcluster.ssl.factory import load_method
from sslcluster.ssl.methods.base import SSLMethod
from sslcluster.stages.data_defaults import resolve_data_defaults
from sslcluster.stages.common import build, build_source, resolve_device, to_plain
from sslcluster.store.embeddings import EmbeddingIndex, ShardedWriter
from sslcluster.store.io import file_sha256
from sslcluster.store.rundir import RunDir

log = logging.getLogger(__name__)

FEATURES = ("backbone", "projection", "pixels")
DEFAULT_SHARD_SIZE = 4096


def _weights_digest(model: SSLMethod) -> str:
    """sha256 of a model's parameters and buffers (identifies an in-memory model for resuming)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ShardBatches(Sampler):
    """Batches of row indices covering ``shards`` in order, never crossing a shard boundary, so a shard's rows are
    computed in the same batches whether or not the export was interrupted before it. Lazy: nothing per row is
    held in memory."""

    def __init__(self, writer: ShardedWriter, shards: list[int], batch_size: int) -> None:
        self.ranges = [writer.shard_rows(k) for k in shards]
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, end in self.ranges:
            for s in range(start, end, self.batch_size):
                yield list(range(s, min(s + self.batch_size, end)))

    def __len__(self) -> int:
        return sum(-(-(end - start) // self.batch_size) for start, end in self.ranges)


class ShardFiller:
    """Collects computed rows into the shards of ``writer`` in the order ``shards`` lists them, saving each shard
    with its row positions as soon as it is full; refuses rows out of order (a duplicate or a gap)."""

    def __init__(self, writer: ShardedWriter, shards: list[int]) -> None:
        self.writer = writer
        self.queue = iter(shards)
        self.k = next(self.queue, -1)
        self.start, self.end = writer.shard_rows(self.k) if self.k >= 0 else (0, 0)
        self.chunks: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.filled = 0

    def add(self, features: np.ndarray, rows: np.ndarray) -> None:
        """Rows ``rows`` (B,) of the data set and their features (B, D), next in order."""
        if self.k < 0 or int(rows[0]) != self.start + self.filled:
            raise RuntimeError(f"export batches out of order: row {int(rows[0])}, expected {self.start + self.filled}")
        self.chunks.append(features.astype(self.writer.dtype, copy=False))
        self.rows.append(rows)
        self.filled += len(rows)
        if self.start + self.filled == self.end:
            self.writer.write_shard(self.k, np.concatenate(self.chunks, axis=0), np.concatenate(self.rows))
            self.chunks, self.rows, self.filled = [], [], 0
            self.k = next(self.queue, -1)
            if self.k >= 0:
                self.start, self.end = self.writer.shard_rows(self.k)

    def done(self) -> bool:
        """Whether every listed shard was saved."""
        return self.k < 0


def batch_features(model: SSLMethod | None, x: torch.Tensor, features: str) -> torch.Tensor:
    """Features (B, D) of a batch of images (B, C, H, W): flattened pixels, the backbone's or the projection's."""
    if features == "pixels":
        return x.flatten(1)
    assert model is not None  # every feature but pixels comes from a model (checked in export_split)
    return model.backbone(x) if features == "backbone" else model.project(x)


@torch.no_grad()
def compute_shards(model: SSLMethod | None, dataset: ImageDataset, writer: ShardedWriter, shards: list[int],
                   features: str, device: torch.device, batch_size: int, num_workers: int, desc: str,
                   bf16: bool = False) -> None:
    """Compute and save ``shards`` of ``writer`` in order; memory holds one shard at a time. ``bf16``: the
    model runs under bfloat16 autocast (CUDA only; features are stored in the writer's dtype)."""
    if not shards:
        return
    if model is not None:
        model.to(device).eval()
    loader = DataLoader(dataset, batch_sampler=ShardBatches(writer, shards, batch_size), num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    todo = sum(e - s for s, e in map(writer.shard_rows, shards))
    filler = ShardFiller(writer, shards)
    with progress(writer.count, desc, unit="img", initial=writer.count - todo) as bar:
        for x, idx in loader:
            if features == "pixels":
                f = x.flatten(1)
            else:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
                    f = batch_features(model, x.to(device, non_blocking=True), features)
            filler.add(f.float().cpu().numpy(), idx.numpy())
            bar.update(len(idx))


# -- distributed export (Lightning DDP) ----------------------------------------------------------------------

class PaddingBatch(Sampler):
    """One batch of row 0, for a rank left without a shard; its features are dropped."""

    def __iter__(self) -> Iterator[list[int]]:
        yield [0]

    def __len__(self) -> int:
        return 1


def export_world(cfg: DictConfig) -> int:
    """How many processes a distributed export runs on: ``trainer.devices`` x ``trainer.num_nodes`` (1 when
    ``devices`` is ``auto`` or a list of one), or the size of an already running process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    devices = cfg.trainer.get("devices", 1)
    if isinstance(devices, str):
        devices = 1 if devices == "auto" else (int(devices) if devices.isdigit() else len(devices.split(",")))
    elif not isinstance(devices, int):
        devices = len(devices)
    return max(1, int(devices)) * max(1, int(cfg.trainer.get("num_nodes", 1) or 1))


class _DistributedExport(pl.LightningModule):
    """Lightning's DDP predict loop over the missing shards: global rank 0 marks the export running and lists the
    missing shards, every rank computes the shards ``missing[rank::world]`` (whole shards: no rank computes a row
    twice, and no sampler padding exists, so none is dropped) and saves them with their row positions."""

    def __init__(self, model: SSLMethod | None, features: str, writer: ShardedWriter, dataset: ImageDataset,
                 batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.model = model
        self.features = features
        self.writer = writer
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shards: list[int] = []
        self.filler: ShardFiller | None = None
        self.n_missing = 0

    def setup(self, stage: str) -> None:
        """Rank 0 begins the export (plan, running manifest); after a barrier each rank takes its shards."""
        if self.trainer.is_global_zero:
            self.writer.begin()
        self.trainer.strategy.barrier("export-begin")
        missing = self.writer.missing()
        self.n_missing = len(missing)
        self.shards = missing[self.trainer.global_rank::self.trainer.world_size]
        log.info("export into %s: rank %d of %d computes shards %s", self.writer.folder, self.trainer.global_rank,
                 self.trainer.world_size, self.shards)
        self.filler = ShardFiller(self.writer, self.shards)

    def predict_dataloader(self) -> DataLoader:
        """This rank's shards in order (Lightning's distributed sampler is off: the shards are dealt here). A rank
        left without a shard (fewer missing shards than ranks) gets one padding batch of row 0, dropped in
        :meth:`predict_step` (Lightning refuses an empty loader on any rank)."""
        sampler: Sampler = ShardBatches(self.writer, self.shards, self.batch_size) if self.shards else PaddingBatch()
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers)

    def predict_step(self, batch: Any, batch_idx: int) -> None:
        """Features of one batch (B images) into this rank's current shard; a padding batch is dropped."""
        if not self.shards:
            return None
        x, idx = batch
        assert self.filler is not None
        self.filler.add(batch_features(self.model, x, self.features).float().cpu().numpy(), idx.cpu().numpy())


def _distributed_shards(cfg: DictConfig, run: RunDir, model: SSLMethod | None, features: str,
                        writer: ShardedWriter, dataset: ImageDataset, batch_size: int) -> tuple[bool, int]:
    """Compute the missing shards on every rank of a Lightning DDP launch (started here when no process group
    exists: Lightning runs this script again on the other ranks). Returns whether this is global rank 0 (which
    assembles) and how many shards were missing."""
    module = _DistributedExport(model, features, writer, dataset, batch_size, int(cfg.data.num_workers))
    trainer_cfg = cfg.trainer
    with run_key_in_env(run.key):  # the processes Lightning starts reuse this run directory
        trainer = pl.Trainer(accelerator=trainer_cfg.get("accelerator", "auto"), devices=trainer_cfg.get("devices", 1),
                             num_nodes=int(trainer_cfg.get("num_nodes", 1) or 1), strategy="ddp", logger=False,
                             use_distributed_sampler=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, inference_mode=True)
        trainer.predict(module, return_predictions=False)
        if module.filler is not None and not module.filler.done():
            raise SSLClusterError(f"rank {trainer.global_rank} of the export into {writer.folder} stopped before "
                                  "its last shard")
        trainer.strategy.barrier("export-shards")  # every rank's shards are on disk
    return bool(trainer.is_global_zero), module.n_missing


def export_plan(cfg: DictConfig, split: str, features: str, weights: str | None, ids_sha256: str,
                eval_node: Any = None, precision: str = "float32") -> dict[str, Any]:
    """What identifies an export: shards of an interrupted export are reused only under an equal plan."""
    data = to_plain(cfg.data)
    for key in ("batch_size", "num_workers"):
        data.pop(key, None)
    data.get("scan", {}).pop("cache_dir", None)
    data.get("source", {}).pop("cache_dir", None)
    return {"split": split, "features": features, "weights_sha256": weights, "ids_sha256": ids_sha256,
            "batch_size": int(cfg.export.batch_size), "data": data,
            "eval": to_plain(eval_node if eval_node is not None else cfg.augmentation.eval), "precision": precision}


def export_split(cfg: DictConfig, run: RunDir, split: str, checkpoint: Path | None, features: str,
                 name: str | None = None, model: SSLMethod | None = None, eval_node: DictConfig | None = None,
                 info: dict[str, Any] | None = None, distributed: bool = False) -> Path:
    """Export ``split`` of ``cfg.data`` to ``embeddings/<name>`` (default name: the split, or ``pixels_<split>``).

    ``model`` without a checkpoint: a model in memory (a pretrained backbone used as it is), with ``eval_node``
    its own evaluation transform (default ``augmentation.eval``) and ``info`` more manifest entries (what the
    weights are). ``export.precision=bf16`` runs models under bfloat16 autocast on CUDA (no effect on a CPU).

    Sharded and resumable: rerunning an interrupted export with the same checkpoint and config computes only
    the missing shards and yields the same ``embeddings.npy`` byte for byte. With ``distributed`` and more than
    one process (``trainer.devices`` x ``trainer.num_nodes``, or the process group DDP training left), every
    process calls this: each computes its share of the shards on its device under Lightning's DDP, and global
    rank 0 assembles the same ``embeddings.npy`` and ``index.csv`` as a one-process export.
    """
    if features not in FEATURES:
        raise SSLClusterError(f"export.features={features!r}; valid: {', '.join(FEATURES)}")
    resolve_data_defaults(cfg)  # data.*=auto (no-op where the pipeline already decided them)
    dtype = np.dtype(cfg.export.dtype)
    if dtype not in (np.float32, np.float16):
        raise SSLClusterError(f"export.dtype={cfg.export.dtype!r}; valid: float32, float16")
    shard_size = int(cfg.export.get("shard_size", DEFAULT_SHARD_SIZE))
    if shard_size <= 0:
        raise SSLClusterError(f"export.shard_size={shard_size} must be positive")
    batch_size = int(cfg.export.batch_size)
    if batch_size <= 0:
        raise SSLClusterError(f"export.batch_size={batch_size} must be positive")
    if features != "pixels" and model is None:
        if checkpoint is None:
            raise SSLClusterError("export needs a checkpoint: set checkpoint=PATH or run pretraining first")
        model = load_method(checkpoint)
    name = name or (split if features != "pixels" else f"pixels_{split}")
    source = build_source(cfg, split, run.path)
    n_skipped = report_skipped(run.path, split, source)
    dataset = ImageDataset(source, build(eval_node if eval_node is not None else cfg.augmentation.eval))
    device = resolve_device(cfg.export.device)
    precision = str(cfg.export.get("precision", "float32"))
    if precision not in ("float32", "bf16"):
        raise SSLClusterError(f"export.precision={precision!r}; valid: float32, bf16")
    bf16 = precision == "bf16" and features != "pixels" and device.type == "cuda"
    ckpt_sha = file_sha256(checkpoint) if checkpoint else None
    weights = None if features == "pixels" else (ckpt_sha or _weights_digest(model))  # type: ignore[arg-type]
    index = EmbeddingIndex(list(source.ids), list(source.paths), labels_or_unknown(source), source.classes)
    plan = export_plan(cfg, split, features, weights, index.ids_sha256(), eval_node,
                       "bf16" if bf16 else "float32")
    writer = ShardedWriter(run.embeddings_dir(name), len(source), shard_size, dtype, plan)
    folder = run.embeddings_dir(name)
    if distributed and export_world(cfg) > 1:
        if model is not None:
            model.eval()
        is_zero, n_missing = _distributed_shards(cfg, run, model, features, writer, dataset, batch_size)
        if not is_zero:
            return folder  # global rank 0 assembles
        resumed, processes = writer.n_shards - n_missing, export_world(cfg)
    else:
        missing = writer.begin()
        compute_shards(model, dataset, writer, missing, features, device, batch_size, cfg.data.num_workers,
                       desc=f"export {name}", bf16=bf16)
        resumed, processes = writer.n_shards - len(missing), 1
    folder = writer.finish(index, keep_shards=bool(cfg.export.get("keep_shards", False)), split=split,
                           features=features, data=cfg.data.name, checkpoint=run.store_path(checkpoint) if checkpoint else None,
                           checkpoint_sha256=ckpt_sha, skipped_files=n_skipped,
                           resumed_shards=resumed, processes=processes, config=plan, **(info or {}))
    log.info("exported %s %s features of %d images to %s", split, features, len(source), folder)
    return folder
