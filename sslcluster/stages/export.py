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
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from sslcluster.data.datasets import ImageDataset
from sslcluster.data.folders import report_skipped
from sslcluster.data.sources import labels_or_unknown
from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress
from sslcluster.ssl.factory import load_method
from sslcluster.ssl.methods.base import SSLMethod
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
    queue = iter(shards)
    k = next(queue)
    start, end = writer.shard_rows(k)
    chunks: list[np.ndarray] = []
    filled = 0
    with progress(writer.count, desc, unit="img", initial=writer.count - todo) as bar:
        for x, idx in loader:
            if int(idx[0]) != start + filled:
                raise RuntimeError(f"export batches out of order: row {int(idx[0])}, expected {start + filled}")
            if features == "pixels":
                f = x.flatten(1)
            else:
                x = x.to(device, non_blocking=True)
                assert model is not None  # every feature but pixels comes from a model (checked in export_split)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
                    f = model.backbone(x) if features == "backbone" else model.project(x)
            chunks.append(f.float().cpu().numpy().astype(writer.dtype, copy=False))
            filled += len(idx)
            bar.update(len(idx))
            if start + filled == end:
                writer.write_shard(k, np.concatenate(chunks, axis=0))
                chunks, filled = [], 0
                k = next(queue, -1)
                if k >= 0:
                    start, end = writer.shard_rows(k)


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
                 info: dict[str, Any] | None = None) -> Path:
    """Export ``split`` of ``cfg.data`` to ``embeddings/<name>`` (default name: the split, or ``pixels_<split>``).

    ``model`` without a checkpoint: a model in memory (a pretrained backbone used as it is), with ``eval_node``
    its own evaluation transform (default ``augmentation.eval``) and ``info`` more manifest entries (what the
    weights are). ``export.precision=bf16`` runs models under bfloat16 autocast on CUDA (no effect on a CPU).

    Sharded and resumable: rerunning an interrupted export with the same checkpoint and config computes only
    the missing shards and yields the same ``embeddings.npy`` byte for byte.
    """
    if features not in FEATURES:
        raise SSLClusterError(f"export.features={features!r}; valid: {', '.join(FEATURES)}")
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
    missing = writer.begin()
    compute_shards(model, dataset, writer, missing, features, device, batch_size, cfg.data.num_workers,
                   desc=f"export {name}", bf16=bf16)
    folder = writer.finish(index, keep_shards=bool(cfg.export.get("keep_shards", False)), split=split,
                           features=features, data=cfg.data.name, checkpoint=run.store_path(checkpoint) if checkpoint else None,
                           checkpoint_sha256=ckpt_sha, skipped_files=n_skipped,
                           resumed_shards=writer.n_shards - len(missing), config=plan, **(info or {}))
    log.info("exported %s %s features of %d images to %s", split, features, len(source), folder)
    return folder
