"""Helpers the stages share: the image source of a split, the export device, a clustering's key, the wall time
per stage."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig

from sslcluster.data.sources import SPLIT_FILE, ImageSource, check_holdout_fraction
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build, to_plain  # noqa: F401  (kept importable from here)


def split_name(cfg: DictConfig, split: str) -> str:
    """The data set's own name of ``split`` (``data.splits``), refused when the data set has no such split."""
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


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested plain dict as ``{"a.b.c": value}`` (for naming the first setting two configs differ in)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_data_config(cfg: DictConfig) -> None:
    """Refuse bad data settings before any run directory is made (one line naming the key)."""
    if "holdout_fraction" in cfg.data:
        check_holdout_fraction(cfg.data.holdout_fraction)


def resolve_device(name: str, key: str = "export.device") -> torch.device:
    """``auto`` (CUDA when available), or the named device, refused when it is CUDA and none is present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSLClusterError(f"{key}={name!r} but no CUDA device is available")
    return torch.device(name)


def cluster_key(cfg: DictConfig, prefix: str = "") -> str:
    """The clustering's key: ``clustering.key``, else ``<algorithm>-<split>``, after ``prefix``."""
    base = cfg.clustering.key or f"{cfg.clustering.name}-{cfg.clustering.split}"
    return f"{prefix}{base}"


class StageTimer:
    """Wall time per stage, for ``time_<stage>_s`` in metrics.json (where a run's minutes go)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the ``with`` block as ``stage``, added to that stage's earlier blocks."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
