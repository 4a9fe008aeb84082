"""Stage 1: self-supervised pretraining with PyTorch Lightning -> ``checkpoints/last.ckpt``.

Checkpoints land in the run's ``checkpoints/`` every epoch and, on Ctrl-C or SIGTERM (e.g. a SLURM time limit),
once more as ``last.ckpt`` before the process exits; ``resume=last`` (with ``run.key=KEY``) or ``resume=PATH``
continues from one. Under DDP every process runs this function; only global rank 0 writes files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from sslcluster.config import config_dir
from sslcluster.data.device_data import build_pretrain_data
from sslcluster.errors import SSLClusterError, TrainingInterrupted
from sslcluster.distributed import run_key_in_env
from sslcluster.distributed import is_global_rank_zero as is_launch_rank_zero  # noqa: F401  (kept importable)
from sslcluster.progress import mode as progress_mode
from sslcluster.ssl.callbacks import (CheckpointOnInterrupt, FitClock, RNGState, TrainProgress,
                                      reliability_callbacks)
from sslcluster.ssl.factory import build_method
from sslcluster.ssl.methods.base import CONFIG_KEY
from sslcluster.ssl.monitors import LabeledImages, MonitorConfig, OnlineMonitors, labeled_subset
from sslcluster.ssl.schedule import TimeBudget, parse_max_time
from sslcluster.ssl.speed import apply_speed, split_trainer_config
from sslcluster.stages.common import build, build_source, flatten, to_plain
from sslcluster.stages.data_defaults import resolve_data_defaults
from sslcluster.tracking.loggers import build_logger, finish_wandb
from sslcluster.store.rundir import RunDir

log = logging.getLogger(__name__)

def resume_path(cfg: DictConfig, run: RunDir) -> Path | None:
    """The checkpoint ``resume`` names: ``null`` (start afresh), ``last`` (this run's last.ckpt) or a path."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    if str(resume) == "last":
        path = run.checkpoints_dir / "last.ckpt"
        if not path.is_file():
            raise SSLClusterError(f"resume=last: no checkpoint {path} (set run.key=KEY of the stopped run, "
                                  "or resume=PATH)")
        return path
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise SSLClusterError(f"resume={resume}: checkpoint not found")
    return path


def check_resume_config(cfg: DictConfig, ckpt_path: Path) -> None:
    """Refuse, in one line, to resume a checkpoint whose model settings (method, backbone, data channels) differ
    from this run's, instead of a state-dict mismatch deep inside Lightning."""
    try:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False).get(CONFIG_KEY)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SSLClusterError(f"cannot read checkpoint {ckpt_path}: {e}") from None
    if not isinstance(saved, dict):
        raise SSLClusterError(f"{ckpt_path} is not an sslcluster checkpoint (no {CONFIG_KEY!r})")
    now = to_plain(cfg)
    for section in ("method.name", "method.module", "backbone"):
        head, _, tail = section.partition(".")
        a = flatten(saved.get(head, {}) if not tail else saved.get(head, {}).get(tail), section)
        b = flatten(now.get(head, {}) if not tail else now.get(head, {}).get(tail), section)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise SSLClusterError(f"resume={cfg.resume}: the checkpoint has {key}={a.get(key)!r}, this run "
                                      f"{b.get(key)!r}; repeat the stopped run's overrides")


def build_monitors(cfg: DictConfig, run_path: Path | None = None) -> OnlineMonitors | None:
    """The kNN / linear-probe monitors on the labeled train and test splits, or None when off or unlabeled."""
    resolve_data_defaults(cfg)  # data.*=auto (no-op where already decided)
    settings: dict[str, Any] = dict(OmegaConf.to_container(cfg.get("monitor") or {}, resolve=True))  # type: ignore[arg-type]
    settings.setdefault("num_workers", int(cfg.data.num_workers))
    mcfg = MonitorConfig(**settings)
    if not (mcfg.knn or mcfg.linear):
        return None
    splits = cfg.data.get("splits") or {}
    if "test" not in splits:
        log.info("online monitors off: data.splits has no test split")
        return None
    transform = build(cfg.augmentation.eval)
    parts = []
    for split in ("train", "test"):
        source = build_source(cfg, split, run_path)
        idx = labeled_subset(source, mcfg.max_images, seed=0)
        if idx is None:
            log.info("online monitors off: the %s split has no labels", split)
            return None
        parts.append(LabeledImages(source, transform, idx))
    num_classes = int(max(int(p.labels.max()) for p in parts)) + 1
    return OnlineMonitors(parts[0], parts[1], num_classes, mcfg)


def check_augmentation(cfg: DictConfig) -> None:
    """Warn when a method-specific augmentation is used with another method (e.g. augmentation=simclr with
    method=rotation), and refuse one view for a two-view method."""
    aug, method = str(cfg.augmentation.name), str(cfg.method.name)
    chosen = cfg.augmentation.get("chosen") is not None  # augmentation=auto took the method's own photo views
    if not chosen and aug != method and (config_dir() / "method" / f"{aug}.yaml").is_file():  # an augmentation named after a method
        log.warning("augmentation=%s with method=%s: did you mean augmentation=%s?", aug, method, method)
    given = cfg.augmentation.get("views_per_image")  # declared by augmentations of a fixed number of views
    if given is not None and int(cfg.method.get("views", 1)) > int(given):
        raise SSLClusterError(f"method={method} needs {cfg.method.views} views; augmentation={aug} gives {given}")


def pretrain(cfg: DictConfig, run: RunDir, callbacks: list[pl.Callback] | None = None, logger: Any = None) -> Path:
    """Train ``cfg.method`` on the train split's images (no labels) and return the last checkpoint's path.

    ``logger``: the Lightning logger to train with (the pipeline passes its tracker's, so later results join the
    same W&B run); None builds one from ``cfg.logger`` here and finishes it when training ends."""
    resolve_data_defaults(cfg)  # data.*=auto (no-op where the pipeline already decided them)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    check_augmentation(cfg)
    ckpt_path = resume_path(cfg, run)
    if ckpt_path is not None:
        check_resume_config(cfg, ckpt_path)
    source = build_source(cfg, "train", run.path)
    # CPU workers or the whole split on the device, per data.pipeline (sslcluster.data.device_data); on the CPU
    # path under DDP Lightning swaps in a DistributedSampler (use_distributed_sampler, on by default).
    data = build_pretrain_data(cfg, source)
    queue = cfg.method.module.get("queue_size")
    if queue is not None and int(queue) >= len(source):
        log.warning("method.module.queue_size=%s is not below the %d training images: the queue holds older keys "
                    "of the very images it contrasts against", queue, len(source))
    trainer_kwargs, speed = split_trainer_config(cfg.trainer)
    model = apply_speed(build_method(cfg), speed)
    model.run_config = to_plain(cfg)
    last = run.checkpoints_dir / "last.ckpt"
    all_callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(dirpath=str(run.checkpoints_dir), filename="epoch{epoch:04d}",
                                     auto_insert_metric_name=False, save_last=True,
                                     every_n_epochs=int(speed["checkpoint_every_n_epochs"]),
                                     save_top_k=1, monitor=None, enable_version_counter=False),
        CheckpointOnInterrupt(last),
        RNGState(),
        *reliability_callbacks(run, source),
    ]
    if trainer_kwargs.get("enable_progress_bar", True) and progress_mode() == "tty":
        if int(speed["progress_bar_refresh_rate"]) != 1:  # Lightning's bar (with the loss) on a terminal
            all_callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=int(speed["progress_bar_refresh_rate"])))
    else:  # any trainer: steps, rate and time left (a terminal bar, or a log line every few percent)
        trainer_kwargs["enable_progress_bar"] = False
        if progress_mode() != "off":
            all_callbacks.append(TrainProgress())
    monitors = build_monitors(cfg, run.path)
    if monitors is not None:
        all_callbacks.append(monitors)
    clock = FitClock()
    all_callbacks.append(clock)
    budget_s = parse_max_time(trainer_kwargs.get("max_time"))
    if budget_s is not None:  # the schedule sized to the budget from the measured step rate (ssl.schedule)
        all_callbacks.append(TimeBudget(budget_s, warmup_epochs=model.optim_cfg.warmup_epochs,
                                        max_fraction=model.optim_cfg.warmup_max_fraction))
    all_callbacks.extend(callbacks or [])
    if trainer_kwargs.get("sync_batchnorm") and (trainer_kwargs.get("accelerator") == "cpu"
                                                 or not torch.cuda.is_available()):
        raise SSLClusterError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm is GPU-only); "
                              "on CPU leave it false")
    own_logger = logger is None
    if own_logger:
        logger = build_logger(cfg, run)
    trainer = pl.Trainer(**trainer_kwargs, default_root_dir=str(run.path), logger=logger, callbacks=all_callbacks)
    failed = True
    try:
        with run_key_in_env(run.key):  # processes started by Lightning's DDP launcher reuse this run directory
            trainer.fit(model, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
        failed = False
    except SIGTERMException:  # Lightning's SIGTERMException is a SystemExit with status 0: make it a failure
        raise TrainingInterrupted(f"training stopped by SIGTERM at step {trainer.global_step}; {last} saved, "
                                  f"continue with run.key={run.key} resume=last") from None
    finally:
        if own_logger:
            finish_wandb(logger, exit_code=1 if failed else 0)
    if trainer.is_global_zero and not last.exists():
        raise SSLClusterError(f"training ended without writing {last}")
    if trainer.is_global_zero:
        run.update_metrics(training_summary(trainer, model, budget_s, clock))
    return last


def training_summary(trainer: pl.Trainer, model: Any, budget_s: float | None, clock: FitClock) -> dict[str, Any]:
    """What the fit did, for ``metrics.json``: optimiser steps and epochs reached, the steps the schedule spanned,
    the time budget (``trainer.max_time``) where there was one, and this session's training rate (images per
    second over its optimiser steps, from the first training step to the last: start-up and export excluded)."""
    plan = model.step_plan
    steps = int(trainer.global_step)
    out: dict[str, Any] = {"train_steps": steps, "train_epochs": round(steps / max(plan.steps_per_epoch, 1), 3),
                           "train_planned_steps": plan.total, "train_fit_s": clock.seconds}
    if budget_s is not None:
        out["train_time_budget_s"] = budget_s
    if clock.seconds > 0 and steps > clock.first_step:
        out["train_images_per_s"] = (steps - clock.first_step) * model.global_batch_size() / clock.seconds
    return out
