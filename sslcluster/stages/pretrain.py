"""Stage 1: self-supervised pretraining with PyTorch Lightning -> ``checkpoints/last.ckpt``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sslcluster.data.datasets import ViewsDataset
from sslcluster.errors import SSLClusterError
from sslcluster.ssl.callbacks import reliability_callbacks
from sslcluster.ssl.methods.base import SSLMethod
from sslcluster.stages.common import build, build_source, to_plain
from sslcluster.tracking.loggers import build_logger  # noqa: F401  (kept importable from here)
from sslcluster.tracking.rundir import RunDir

log = logging.getLogger(__name__)


def build_method(cfg: DictConfig) -> SSLMethod:
    """Backbone + method from config (no data needed)."""
    backbone = build(cfg.backbone.module)
    optim = OmegaConf.to_container(cfg.method.optim, resolve=True)
    return build(cfg.method.module, backbone=backbone, optim=optim, batch_size_per_device=cfg.data.batch_size)


def pretrain(cfg: DictConfig, run: RunDir) -> Path:
    """Train ``cfg.method`` on the train split's images (no labels) and return the last checkpoint's path."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    source = build_source(cfg, "train")
    views = build(cfg.augmentation.views)
    dataset = ViewsDataset(source, views)
    if len(dataset) < cfg.data.batch_size:
        raise SSLClusterError(f"data.batch_size={cfg.data.batch_size} is larger than the train split "
                              f"({len(dataset)} images)")
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
                        pin_memory=False)
    model = build_method(cfg)
    model.run_config = to_plain(cfg)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=str(run.checkpoints_dir), filename="epoch{epoch:04d}",
                                           auto_insert_metric_name=False, save_last=True, every_n_epochs=1,
                                           save_top_k=1, monitor=None)
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), default_root_dir=str(run.path),
                         logger=build_logger(cfg, run), callbacks=[ckpt_cb, *reliability_callbacks(run, source)])
    trainer.fit(model, loader)
    last = run.checkpoints_dir / "last.ckpt"
    if not last.exists():
        raise SSLClusterError(f"training ended without writing {last}")
    return last
