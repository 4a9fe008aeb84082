"""Helpers the stages share: the image source of a split, the export device."""

from __future__ import annotations


import torch
from omegaconf import DictConfig

from sslcluster.data.sources import ImageSource
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build, to_plain  # noqa: F401  (kept importable from here)


def split_name(cfg: DictConfig, split: str) -> str:
    """The data set's own name of ``split`` (``data.splits``), refused when the data set has no such split."""
    splits = cfg.data.get("splits") or {}
    if split not in splits:
        raise SSLClusterError(f"split {split!r} is not in data.splits ({', '.join(splits)})")
    return splits[split]


def build_source(cfg: DictConfig, split: str) -> ImageSource:
    """The image source (ids, paths, labels) of ``split`` of ``cfg.data``."""
    return build(cfg.data.source, split=split_name(cfg, split))


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), or the named device, refused when it is CUDA and none is present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSLClusterError(f"export.device={name!r} but no CUDA device is available")
    return torch.device(name)
