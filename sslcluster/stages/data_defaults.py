"""Data-aware defaults: settings a data config leaves as ``auto`` are decided from the data before a run starts.

An image folder (``configs/data/image_folder.yaml``; a FiftyOne dataset, ``fiftyone.yaml``, alike) leaves its channels, image size, mean and std, number of
classes, the clustered split and the views (``augmentation=auto``) to this module. They are decided from a seeded
sample of the train split (:mod:`sslcluster.data.inspect`), printed once and written, resolved, into the run's
``config.yaml``, so the run is reproducible and every later stage of it reads the same values (a later stage on an
existing run takes the run's own decisions). Any explicit value (``data.channels=3``, ``augmentation=simclr``)
is not ``auto`` and so is kept as given. The batch size is capped to the train split, with a warning.

- channels: 1 when every sampled image is grayscale, else 3;
- image_size: the median short side of the sampled images, at most ``data.auto.max_image_size`` (images are never
  up-sampled by default);
- mean, std: per channel, of the sampled images as the model sees them;
- num_classes (the k of k-means): the number of class folders; with none (unlabelled images) k is chosen by
  ``clustering.select_k`` (silhouette, where the clustering option leaves its method null);
- cluster_split (``clustering.split``): ``test`` with labels, ``all`` without (an unlabelled folder is clustered
  whole);
- precision (``trainer.precision``) and channels_last (``trainer.speed.channels_last``): bf16-mixed with the
  channels-last layout where the device computes bfloat16 natively (:func:`sslcluster.ssl.speed.native_bf16`),
  float32 elsewhere (the recipe study in benchmarks/RESULTS.md);
- augmentation=auto: the method's own views for photos (``method.photo_augmentation``, e.g. SimCLR's), and for
  grayscale images the same views without colour operations (saturation, hue, random grayscale).
"""

from __future__ import annotations

import inspect as pyinspect
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sslcluster.config import config_dir
from sslcluster.data.inspect import channel_stats, inspect_images
from sslcluster.distributed import is_global_rank_zero
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build
from sslcluster.ssl.speed import native_bf16
from sslcluster.stages.common import split_name
from sslcluster.store.runconfig import read_run_config

log = logging.getLogger(__name__)

AUTO = "auto"
#: data keys that may be ``auto``
DATA_KEYS = ("channels", "image_size", "mean", "std", "num_classes", "cluster_split", "precision", "channels_last")
#: colour operations of lightly's view transforms, switched off for grayscale images
COLOUR_OFF = {"cj_sat": 0.0, "cj_hue": 0.0, "random_gray_scale": 0.0}


def pending(cfg: DictConfig) -> list[str]:
    """The config keys still ``auto``."""
    keys = [f"data.{k}" for k in DATA_KEYS if OmegaConf.select(cfg, f"data.{k}", default=None) == AUTO]
    if OmegaConf.select(cfg, "augmentation.name", default=None) == AUTO:
        keys.append("augmentation")
    return keys


def resolve_data_defaults(cfg: DictConfig) -> dict[str, Any]:
    """Decide every ``auto`` setting of ``cfg`` in place (see the module's description); returns what was
    decided (empty when nothing was ``auto``). An existing run (``run.key``) keeps its own decisions."""
    keys = pending(cfg)
    if not keys:
        return {}
    run_path = Path(str(cfg.run.root)) / str(cfg.run.key) if cfg.run.get("key") else None
    saved = read_run_config(run_path) if run_path is not None and run_path.is_dir() else {}
    decided: dict[str, Any] = {}
    if saved:
        decided = _from_run(cfg, saved, keys)
        keys = pending(cfg)
        if not keys:
            return decided
    decided.update(_from_data(cfg, keys, run_path if saved else None))
    return decided


def _from_run(cfg: DictConfig, saved: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Take an existing run's decisions for ``keys`` where its config holds concrete values."""
    out: dict[str, Any] = {}
    with open_dict(cfg):
        for key in keys:
            if key == "augmentation":
                node = saved.get("augmentation")
                if isinstance(node, dict) and node.get("name") not in (None, AUTO):
                    cfg.augmentation = OmegaConf.create(node)
                    out[key] = node.get("name")
                continue
            value = (saved.get("data") or {}).get(key.split(".", 1)[1], AUTO)
            if value != AUTO:
                OmegaConf.update(cfg, key, value, merge=False)
                out[key] = value
        _apply_unlabelled(cfg)
    return out


def _from_data(cfg: DictConfig, keys: list[str], run_path: Path | None) -> dict[str, Any]:
    """Decide ``keys`` from a seeded sample of the train split."""
    settings = cfg.data.get("auto") or {}
    sample, seed = int(settings.get("sample", 512)), int(settings.get("seed", 0))
    cap = int(settings.get("max_image_size", 64))
    kwargs: dict[str, Any] = {"split": split_name(cfg, "train"), "channels": 3}
    if run_path is not None and "split_file" in cfg.data.source:
        kwargs["split_file"] = str(run_path / "split.csv")
    source = build(cfg.data.source, **kwargs)
    n = len(source)
    if n == 0:
        where = next((f"data.source.{k}={cfg.data.source[k]}" for k in ("root", "dataset") if k in cfg.data.source),
                     "data.source")
        raise SSLClusterError(f"no images in the train split of {where}")
    facts = inspect_images(source.load, n, source.classes, sample=sample, seed=seed)
    lines = [f"data defaults, from {facts.sampled:,} of the {n:,} train images (seeded sample):"]
    with open_dict(cfg):
        if "data.channels" in keys:
            cfg.data.channels = 1 if facts.grayscale else 3
            lines.append(f"  channels={cfg.data.channels} ({'every sampled image is grayscale' if facts.grayscale else 'colour images'})")
        if "data.image_size" in keys:
            cfg.data.image_size = max(8, min(facts.short_side, cap))
            lines.append(f"  image_size={cfg.data.image_size} (median short side {facts.short_side} px, at most "
                         f"data.auto.max_image_size={cap}; never up-sampled)")
        channels, size = int(cfg.data.channels), int(cfg.data.image_size)
        if "data.mean" in keys or "data.std" in keys:
            mean, std = channel_stats(source.load, n, channels, size, sample=sample, seed=seed)
            if "data.mean" in keys:
                cfg.data.mean = mean
            if "data.std" in keys:
                cfg.data.std = std
            lines.append(f"  mean={list(cfg.data.mean)} std={list(cfg.data.std)} (of the sampled images at {size} px)")
        if "data.num_classes" in keys:
            cfg.data.num_classes = facts.classes
            lines.append(f"  num_classes={facts.classes} (class folders: the k of k-means)" if facts.classes else
                         "  num_classes=null: no class folders, so no held-out labels; k is chosen by "
                         "clustering.select_k and label-based metrics are skipped")
        if "data.cluster_split" in keys:
            cfg.data.cluster_split = "test" if facts.classes else "all"
            if not facts.classes:
                lines.append("  clustering.split=all (unlabelled images: every image is clustered)")
        if "data.precision" in keys or "data.channels_last" in keys:
            lines.append(decide_precision(cfg, keys))
        if "augmentation" in keys:
            name = photo_views(cfg, grayscale=channels == 1)
            lines.append(f"  augmentation={name} (the {cfg.method.name} method's photo views"
                         + (", colour operations off: grayscale" if channels == 1 else "") + ")")
        _apply_unlabelled(cfg)
        cfg.data.inspected = facts.as_dict()
        lines += cap_batch_size(cfg, n)
    decided = {k: OmegaConf.select(cfg, k) for k in keys if k != "augmentation"}
    if is_global_rank_zero():
        print("\n".join(lines))
    return decided


def decide_precision(cfg: DictConfig, keys: list[str]) -> str:
    """Set ``data.precision`` / ``data.channels_last`` (where ``auto``): bf16-mixed with channels-last where the
    device computes bfloat16 natively, else float32; an explicit ``trainer.precision`` /
    ``trainer.speed.channels_last`` wins and is recorded as decided. Returns the printed line."""
    fast = native_bf16(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    given = {"data.precision": OmegaConf.select(cfg, "trainer.precision", default=AUTO),
             "data.channels_last": OmegaConf.select(cfg, "trainer.speed.channels_last", default=AUTO)}
    if "data.precision" in keys:
        cfg.data.precision = ("bf16-mixed" if fast else "32-true") if given["data.precision"] == AUTO \
            else given["data.precision"]
    if "data.channels_last" in keys:
        cfg.data.channels_last = fast if given["data.channels_last"] == AUTO else bool(given["data.channels_last"])
    return (f"  trainer precision={cfg.data.get('precision')}, channels_last={cfg.data.get('channels_last')} ("
            + ("the device computes bfloat16 natively" if fast else "no native bfloat16 here") + ")")


def _apply_unlabelled(cfg: DictConfig) -> None:
    """Without held-out classes k comes from ``clustering.select_k``: silhouette where the option leaves it
    unset (label-free: Rousseeuw 1987)."""
    if cfg.data.get("num_classes", 0) is None and "select_k" in cfg.clustering:
        if cfg.clustering.select_k.get("method") is None:
            cfg.clustering.select_k.method = "silhouette"


def cap_batch_size(cfg: DictConfig, n_train: int) -> list[str]:
    """Lower ``data.batch_size`` to a power of two no more than half the train split where it is larger than the
    split (so an epoch has at least two steps); one warning line."""
    batch = cfg.data.get("batch_size")
    if not isinstance(batch, int) or batch <= n_train:
        return []
    capped = 1 << max(1, (max(n_train // 2, 2)).bit_length() - 1)
    cfg.data.batch_size = capped
    log.warning("data.batch_size=%d is larger than the train split (%d images): using %d", batch, n_train, capped)
    return [f"  batch_size={capped} (the configured {batch} is larger than the {n_train} train images)"]


def photo_views(cfg: DictConfig, grayscale: bool) -> str:
    """Replace ``cfg.augmentation`` (``auto``) by the method's photo views (``method.photo_augmentation``,
    ``configs/augmentation/<name>.yaml``), with colour operations off for grayscale images; returns the name."""
    name = str(cfg.method.get("photo_augmentation") or "simclr")
    path = config_dir() / "augmentation" / f"{name}.yaml"
    if not path.is_file():
        raise SSLClusterError(f"method.photo_augmentation={name}: no configs/augmentation/{name}.yaml")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # interpolations kept: they resolve in cfg
    assert isinstance(node, dict)
    if grayscale:
        _colour_off(node["views"])
    node["chosen"] = {"by": "augmentation=auto", "images": "grayscale" if grayscale else "colour"}
    cfg.augmentation = OmegaConf.create(node)
    return name


def _colour_off(node: Any) -> None:
    """Set every colour operation of the view transforms in ``node`` (plain nested dicts with ``_target_``) to
    zero, where the transform takes that argument."""
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if target:
        from hydra.utils import get_class

        accepted = set(pyinspect.signature(get_class(str(target))).parameters)
        for key, value in COLOUR_OFF.items():
            if key in accepted:
                node[key] = value
    for value in node.values():
        _colour_off(value)
