"""Lightning loggers from the ``logger`` config group: ``csv`` | ``tensorboard`` | ``wandb`` | ``none``.

W&B goes through Lightning's ``WandbLogger``. It is offline unless asked otherwise: the mode is ``$WANDB_MODE`` when
the user set it, else ``logger.mode`` (``offline`` by default); asking for ``online`` without W&B credentials falls
back to offline with a warning, so a run never stops at a login prompt. The run files land in
``<run dir>/wandb/offline-run-*/`` and are uploaded later with ``wandb sync <that folder>``.

Whoever builds a logger owns it and passes it on: the pipeline's :class:`sslcluster.tracking.wandb_log.Tracker`
builds the pretraining logger and hands it to the pretrain stage, so the post-evaluation summary lands in the *same*
W&B run that received the training curves; a pretrain stage run alone builds and finishes its own.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError

log = logging.getLogger(__name__)

LOGGERS = ("csv", "none", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it needs ``tensorboard`` or ``tensorboardX``)."""
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def has_wandb_credentials() -> bool:
    """An API key in ``$WANDB_API_KEY`` or a netrc entry for the W&B host (no network access)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://", 1)[-1].split("/", 1)[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg: DictConfig) -> str:
    """``$WANDB_MODE`` if set, else ``logger.mode``; ``online`` without credentials becomes ``offline``."""
    env = os.environ.get("WANDB_MODE")
    mode = env or str(cfg.logger.get("mode") or "offline")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in WANDB_MODES:
        where = "WANDB_MODE" if env else "logger.mode"
        raise SSLClusterError(f"{where}={mode!r} is not a W&B mode; valid: {', '.join(WANDB_MODES)}")
    if mode == "online" and not has_wandb_credentials():
        log.warning("W&B online mode asked for but no credentials found (WANDB_API_KEY or `wandb login`); "
                    "logging offline instead")
        mode = "offline"
    return mode


def wandb_group(cfg: DictConfig) -> str | None:
    """``logger.group``, else the Hydra multirun's name (``multirun-<timestamp>``) when inside one."""
    group = cfg.logger.get("group")
    if group:
        return str(group)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return f"multirun-{Path(HydraConfig.get().sweep.dir).name}"
    except Exception:  # no Hydra app around this call: no default group
        pass
    return None


def wandb_init_kwargs(cfg: DictConfig, run_path: Path, run_key: str, job_type: str) -> dict[str, Any]:
    """The ``wandb.init`` arguments of a run: project, entity, group, tags, name, mode, folder, resolved config."""
    lc = cfg.logger
    return {
        "project": str(lc.get("project") or "sslcluster"),
        "entity": lc.get("entity"),
        "group": wandb_group(cfg),
        "tags": [str(t) for t in (lc.get("tags") or [])],
        "name": str(lc.get("run_name") or run_key),
        "job_type": job_type,
        "mode": wandb_mode(cfg),
        "dir": str(run_path),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def finish_wandb(logger: Any, exit_code: int = 0) -> None:
    """Finish the W&B run of a Lightning ``WandbLogger`` if it started one (other loggers: nothing to do)."""
    exp = getattr(logger, "_experiment", None)  # set by WandbLogger once its run exists (rank zero only)
    if exp is not None and callable(getattr(exp, "finish", None)):
        exp.finish(exit_code=exit_code)


def build_logger(cfg: DictConfig, run: Any) -> Any:
    """The Lightning logger of ``cfg.logger.name`` writing into the run directory ``run.path`` (False: none)."""
    name = cfg.logger.name
    if name == "none":
        return False
    import pytorch_lightning as pl

    if name == "csv":
        return pl.loggers.CSVLogger(save_dir=str(run.path), name="logs", version="")
    if name == "tensorboard":
        if not tensorboard_available():
            raise SSLClusterError("logger=tensorboard needs the tensorboard package (pip install tensorboard); "
                                  "or use logger=csv or logger=wandb")
        return pl.loggers.TensorBoardLogger(save_dir=str(run.path), name="logs", version="tensorboard",
                                            default_hp_metric=False)
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise SSLClusterError("logger=wandb needs the wandb package (pip install wandb)") from None
        kwargs = wandb_init_kwargs(cfg, Path(run.path), run.key, job_type=str(cfg.logger.get("job_type") or "train"))
        return pl.loggers.WandbLogger(save_dir=kwargs.pop("dir"), log_model=False, **kwargs)
    raise SSLClusterError(f"unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
