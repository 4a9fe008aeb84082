"""Stage 2: embeddings of a data split from a checkpoint (or raw pixels, for the baseline).

Writes ``embeddings/<name>/`` (array, index, manifest; see :mod:`sslcluster.tracking.embeddings`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from sslcluster.data.datasets import ImageDataset
from sslcluster.data.sources import labels_or_unknown
from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.base import CONFIG_KEY, SSLMethod
from sslcluster.stages.common import build, build_source, file_sha256, resolve_device
from sslcluster.tracking.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.tracking.rundir import RunDir

log = logging.getLogger(__name__)

FEATURES = ("backbone", "projection", "pixels")


def load_method(checkpoint: str | Path) -> SSLMethod:
    """Rebuild the method saved in an sslcluster checkpoint from the config stored in it."""
    from sslcluster.stages.pretrain import build_method

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SSLClusterError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SSLClusterError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise SSLClusterError(f"{path} is not an sslcluster checkpoint (no {CONFIG_KEY!r} / state_dict)")
    model = build_method(OmegaConf.create(ckpt[CONFIG_KEY]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


@torch.no_grad()
def compute_features(model: SSLMethod | None, loader: DataLoader, features: str, device: torch.device,
                     dtype: np.dtype) -> np.ndarray:
    """(N, D) features in dataset order."""
    chunks: list[np.ndarray] = []
    if model is not None:
        model.to(device)
    for x, _ in tqdm(loader, desc=f"export[{features}]", leave=False, disable=None):
        if features == "pixels":
            f = x.flatten(1)
        else:
            x = x.to(device, non_blocking=True)
            f = model.backbone(x) if features == "backbone" else model.project(x)  # type: ignore[union-attr]
        chunks.append(f.float().cpu().numpy().astype(dtype, copy=False))
    return np.concatenate(chunks, axis=0)


def export_split(cfg: DictConfig, run: RunDir, split: str, checkpoint: Path | None, features: str,
                 name: str | None = None, model: SSLMethod | None = None) -> Path:
    """Export ``split`` of ``cfg.data`` to ``embeddings/<name>`` (default name: the split, or ``pixels_<split>``)."""
    if features not in FEATURES:
        raise SSLClusterError(f"export.features={features!r}; valid: {', '.join(FEATURES)}")
    dtype = np.dtype(cfg.export.dtype)
    if dtype not in (np.float32, np.float16):
        raise SSLClusterError(f"export.dtype={cfg.export.dtype!r}; valid: float32, float16")
    if features != "pixels" and model is None:
        if checkpoint is None:
            raise SSLClusterError("export needs a checkpoint: set checkpoint=PATH or run pretraining first")
        model = load_method(checkpoint)
    name = name or (split if features != "pixels" else f"pixels_{split}")
    source = build_source(cfg, split)
    dataset = ImageDataset(source, build(cfg.augmentation.eval))
    loader = DataLoader(dataset, batch_size=cfg.export.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers)
    device = resolve_device(cfg.export.device)
    array = compute_features(model, loader, features, device, dtype)
    if not np.isfinite(array.astype(np.float32)).all():
        raise SSLClusterError(f"exported {features} features of split {split!r} contain NaN or inf")
    index = EmbeddingIndex(list(source.ids), list(source.paths), labels_or_unknown(source), source.classes)
    folder = write_embeddings(
        run.embeddings_dir(name), array, index, split=split, features=features, data=cfg.data.name,
        checkpoint=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint else None)
    log.info("exported %s %s features of %d images to %s", split, features, len(array), folder)
    return folder
