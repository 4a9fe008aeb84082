"""Stage 1: self-supervised pretraining with PyTorch Lightning -> ``checkpoints/last.ckpt``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from sslcluster.data.device_data import build_pretrain_data
from sslcluster.errors import SSLClusterError
from sslcluster.ssl.callbacks import reliability_callbacks
from sslcluster.ssl.methods.base import SSLMethod
from sslcluster.ssl.speed import apply_speed, split_trainer_config
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
    # CPU workers or the whole split on the device, per data.pipeline (sslcluster.data.device_data)
    source = build_source(cfg, "train")
    data = build_pretrain_data(cfg, source)
    trainer_kwargs, speed = split_trainer_config(cfg.trainer)
    model = apply_speed(build_method(cfg), speed)
    model.run_config = to_plain(cfg)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=str(run.checkpoints_dir), filename="epoch{epoch:04d}",
                                           auto_insert_metric_name=False, save_last=True, every_n_epochs=1,
                                           save_top_k=1, monitor=None)
    trainer = pl.Trainer(**trainer_kwargs, default_root_dir=str(run.path), logger=build_logger(cfg, run),
                         callbacks=[ckpt_cb, *reliability_callbacks(run, source)])
    trainer.fit(model, datamodule=data)
    last = run.checkpoints_dir / "last.ckpt"
    if not last.exists():
        raise SSLClusterError(f"training ended without writing {last}")
    return last
