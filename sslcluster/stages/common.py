"""Helpers the stages share: building sources and transforms from config, devices, seeds."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sslcluster.data.sources import ImageSource
from sslcluster.errors import SSLClusterError


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` node with plain Python containers."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except SSLClusterError:
        raise
    except Exception as e:  # hydra wraps the constructor's error; surface the innermost one
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SSLClusterError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        raise SSLClusterError(f"cannot build {target}: {cause}") from None


def split_name(cfg: DictConfig, split: str) -> str:
    splits = cfg.data.get("splits") or {}
    if split not in splits:
        raise SSLClusterError(f"split {split!r} is not in data.splits ({', '.join(splits)})")
    return splits[split]


def build_source(cfg: DictConfig, split: str) -> ImageSource:
    return build(cfg.data.source, split=split_name(cfg, split))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSLClusterError(f"export.device={name!r} but no CUDA device is available")
    return torch.device(name)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
