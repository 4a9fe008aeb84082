"""Helpers the stages share: building sources and transforms from config, devices, seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sslcluster.data.sources import SPLIT_FILE, ImageSource, check_holdout_fraction
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


def build_source(cfg: DictConfig, split: str, run_path: Path | None = None) -> ImageSource:
    """The source of ``split``. Sources that hold out a test split themselves (they declare ``split_file`` in
    their config node) record it in ``<run_path>/split.csv``, read back by every later stage of the run."""
    kwargs: dict[str, Any] = {"split": split_name(cfg, split)}
    if run_path is not None and "split_file" in cfg.data.source:
        kwargs["split_file"] = str(Path(run_path) / SPLIT_FILE)
    return build(cfg.data.source, **kwargs)


def check_data_config(cfg: DictConfig) -> None:
    """Refuse bad data settings before any run directory is made (one line naming the key)."""
    if "holdout_fraction" in cfg.data:
        check_holdout_fraction(cfg.data.holdout_fraction)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSLClusterError(f"export.device={name!r} but no CUDA device is available")
    return torch.device(name)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
