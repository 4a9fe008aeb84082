"""Building a self-supervised method (backbone + method module) from config, and rebuilding one from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError
from sslcluster.factory import build
from sslcluster.ssl.methods.base import CONFIG_KEY, SSLMethod


def build_method(cfg: DictConfig) -> SSLMethod:
    """Backbone + method from config (``backbone.module``, ``method.module``, ``method.optim``; no data needed)."""
    backbone = build(cfg.backbone.module)
    optim = OmegaConf.to_container(cfg.method.optim, resolve=True)
    return build(cfg.method.module, backbone=backbone, optim=optim, batch_size_per_device=cfg.data.batch_size)


def load_method(checkpoint: str | Path) -> SSLMethod:
    """Rebuild the method saved in an sslcluster checkpoint from the config stored in it (eval mode)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SSLClusterError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SSLClusterError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise SSLClusterError(f"{path} is not an sslcluster checkpoint (no {CONFIG_KEY!r} / state_dict)")
    cfg = OmegaConf.create(ckpt[CONFIG_KEY])
    module = cfg.backbone.module
    # the checkpoint holds the trained weights: a pretrained backbone's initial ones are not loaded (or looked for)
    for key, off in (("pretrained", False), ("weights", None)):
        if key in module:
            module[key] = off
    model = build_method(cfg)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
