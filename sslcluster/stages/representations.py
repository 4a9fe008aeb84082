"""The representations a run compares, built and exported: the learned features (from a checkpoint, or the run's
own pretrained backbone used as it is), the raw-pixel baseline, UMAP of the raw pixels and pretrained backbones
(``baselines=[pixels, pixels_umap, timm:MODEL[@WEIGHTS]]``). Names and prefixes are defined in
:mod:`sslcluster.store.representations`; :mod:`sslcluster.pipeline` clusters and scores each one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslcluster.distributed import is_global_rank_zero
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build
from sslcluster.stages.common import StageTimer, cluster_key
from sslcluster.stages.export import export_split
from sslcluster.stages.pixels_umap import export_pixels_umap
from sslcluster.store.embeddings import Embeddings
from sslcluster.store.representations import LEARNED, PIXELS, PIXELS_UMAP, key_prefix, metric_prefix, parse_baseline
from sslcluster.store.rundir import RunDir

log = logging.getLogger(__name__)

BASELINE_PREFIX = "pixels_"


@dataclass
class Representation:
    """One representation a run compares: its embeddings per split (kNN and linear probe score ``train`` against
    ``test``) and the embeddings it clusters. Its results enter ``metrics.json`` under ``metric_prefix``, its
    clustering under the key ``key_prefix + <cluster key>``; the name is recorded in the clustering's record."""

    name: str
    metric_prefix: str
    key_prefix: str
    splits: dict[str, Path] = field(default_factory=dict)
    clustered: Path | None = None
    named: bool = False  # whether its clustering is named (naming.enabled) before evaluation
    model: Any = None      # a pretrained backbone used as it is (PretrainedFeatures), exported without a checkpoint
    eval_node: Any = None  # its evaluation transform (config node)
    info: dict[str, Any] = field(default_factory=dict)  # manifest entries: what the representation is

    @classmethod
    def named_as(cls, name: str) -> "Representation":
        """A representation called ``name`` (``learned``, ``pixels``, ``timm:MODEL``) with its prefixes."""
        return cls(name, metric_prefix(name), key_prefix(name))

    def cluster_key(self, cfg: DictConfig) -> str:
        """The clustering's key: ``clustering.key``, else ``<algorithm>-<split>``, after ``prefix``."""
        return self.key_prefix + cluster_key(cfg)


#: the fixed representations a run can hold, by the name recorded in ``record.json``: metric and key prefixes
#: (pretrained baselines ``timm:MODEL`` have theirs from :func:`sslcluster.store.representations.metric_prefix`).
REPRESENTATIONS = {"learned": ("", ""), "pixels": (BASELINE_PREFIX, "pixels-"),
                   "pixels_umap": ("pixels_umap_", "pixels_umap-")}


def representation_of(embeddings: Embeddings) -> str:
    """The representation an embeddings set holds: as its manifest records it (pretrained baselines), else
    ``pixels`` for raw pixels and ``learned`` for the rest."""
    manifest = embeddings.manifest()
    if manifest.get("representation"):
        return str(manifest["representation"])
    return "pixels" if manifest.get("features") == "pixels" else "learned"


def _timm_eval_node(model_name: str, cfg: DictConfig, image_size: Any) -> DictConfig:
    from omegaconf import OmegaConf

    return OmegaConf.create({"_target_": "sslcluster.ssl.timm_backbone.timm_eval_transform",
                             "model_name": model_name, "in_channels": int(cfg.data.channels), "channels": "repeat",
                             "image_size": image_size})


def _weights_info(name: str, pretrained: bool, weights: str | None) -> dict[str, Any]:
    from sslcluster.store.io import file_sha256

    if weights is None:
        return {"backbone": {"name": name, "weights": "timm hub" if pretrained else "random"}}
    path = Path(weights).expanduser().resolve()
    return {"backbone": {"name": name, "weights": str(path), "weights_sha256": file_sha256(path)}}


def frozen_learned(cfg: DictConfig) -> Representation:
    """The run's own backbone used as it is (``stages.pretrain=false`` without a checkpoint), built now with its
    pretrained weights: the features clustered and scored are its pooled backbone features."""
    from sslcluster.ssl.timm_backbone import pretrained_features

    bb = cfg.backbone
    if bb.get("eval") is None or not (bb.get("pretrained") or bb.get("weights")):
        raise SSLClusterError("stages.pretrain=false without a checkpoint needs a pretrained backbone "
                              "(backbone=timm backbone.pretrained=true, or backbone.weights=PATH) or checkpoint=PATH")
    for key in ("export.features", "clustering.features"):
        section, option = key.split(".")
        if cfg[section][option] != "backbone":
            log.warning("%s=%s: a backbone used without training has no projection head; using backbone features",
                        key, cfg[section][option])
            cfg[section][option] = "backbone"
    rep = Representation.named_as(LEARNED)
    rep.model = pretrained_features(build(bb.module))
    rep.eval_node = bb.eval
    rep.info = _weights_info(str(bb.name), bool(bb.pretrained), bb.weights)
    return rep


def baseline_representations(cfg: DictConfig) -> list[Representation]:
    """The representations of ``baselines`` (``stages.baseline``), pretrained backbones built now (so that a
    missing or wrong weights file fails before training)."""
    from omegaconf import OmegaConf

    from sslcluster.ssl.timm_backbone import TimmBackbone, pretrained_features

    if not cfg.stages.baseline:
        return []
    entries = cfg.get("baselines")
    entries = [PIXELS] if entries is None else (list(entries) if OmegaConf.is_list(entries) else [entries])
    reps: list[Representation] = []
    for entry in entries:
        name, weights = parse_baseline(entry)
        if any(r.name == name for r in reps):
            raise SSLClusterError(f"baselines: {name} is listed twice")
        rep = Representation.named_as(name)
        if name not in (PIXELS, PIXELS_UMAP):
            model_name = name.split(":", 1)[1]
            image_size = cfg.get("baseline_image_size")
            rep.model = pretrained_features(TimmBackbone(model_name, pretrained=weights is None, weights=weights,
                                                         in_channels=int(cfg.data.channels), image_size=image_size))
            rep.eval_node = _timm_eval_node(model_name, cfg, image_size)
            rep.info = {"representation": name, **_weights_info(model_name, weights is None, weights)}
        reps.append(rep)
    return reps


def clustering_exports(cfg: DictConfig) -> list[tuple[str, str, str]]:
    """``(split, features, embeddings name)`` of every set the configured clustering reads: the clustered split
    (``clustering.features``, or the features the algorithm reads itself), the split it is fitted on
    (``clustering.fit_split``) and the features it mines neighbours on (SCAN: the projection head's outputs)."""
    from sslcluster.clustering.base import ClusteringAlgorithm

    algo = build(cfg.clustering.algorithm)
    split, fit = cfg.clustering.split, cfg.clustering.get("fit_split")
    reads = (algo.input_features() if isinstance(algo, ClusteringAlgorithm) else None) or cfg.clustering.features
    pairs = [(split, cfg.clustering.features), (split, reads)]
    if fit is not None:
        pairs.append((fit, reads))
    mine = algo.mining_features() if isinstance(algo, ClusteringAlgorithm) and algo.trains_on_rows else None
    if mine is not None:
        pairs.append((fit or split, mine))
    return [(s, f, s if f == cfg.export.features else f"{s}_{f}") for s, f in dict.fromkeys(pairs)]


def export_representations(cfg: DictConfig, run: RunDir, checkpoint: Path | None, embeddings: Path | None,
                           timed: StageTimer, learned: Representation | None = None,
                           baselines: list[Representation] | None = None) -> list[Representation]:
    """Export what the run compares: the learned features (from the checkpoint, a pretrained backbone used as
    it is in ``learned.model``, or the given ``embeddings``) and each baseline (raw pixels, pretrained
    backbones), every one of the same splits.

    Under a multi-process launch (DDP training, or ``trainer.devices``/``num_nodes`` above 1) every process exports
    its share of the learned features; the baselines are exported by global rank 0 alone, after the other
    processes have returned."""
    split = cfg.clustering.split
    learned = learned or Representation.named_as(LEARNED)
    learned.named = cfg.get("naming") is not None and bool(cfg.naming.enabled)
    if embeddings is not None:
        learned.splits[split] = learned.clustered = embeddings
    elif cfg.stages.export:
        with timed("export"):
            for s in dict.fromkeys([*cfg.export.splits, split]):
                learned.splits[s] = export_split(cfg, run, s, checkpoint, cfg.export.features, model=learned.model,
                                                 eval_node=learned.eval_node, info=learned.info, distributed=True)
            learned.clustered = learned.splits[split]
            for s, features, name in clustering_exports(cfg):  # what the clustering reads beyond export.splits
                if learned.model is not None and features != "backbone":
                    continue  # a pretrained backbone used as it is has only backbone features
                if features == cfg.export.features and s in learned.splits:
                    continue
                done = export_split(cfg, run, s, checkpoint, features, name=name, model=learned.model,
                                    eval_node=learned.eval_node, info=learned.info, distributed=True)
                if s == split and features == cfg.clustering.features:
                    learned.clustered = done
    reps = [learned]
    if not is_global_rank_zero():
        return reps
    if embeddings is None:
        for base in baselines if baselines is not None else baseline_representations(cfg):
            with timed("baseline"):
                for s in dict.fromkeys([*learned.splits, split, *[f for f in [cfg.clustering.get("fit_split")] if f]]):
                    if base.name in (PIXELS, PIXELS_UMAP):  # pixels_umap maps the raw pixels' embeddings
                        base.splits[s] = export_split(cfg, run, s, None, "pixels")
                    else:
                        base.splits[s] = export_split(cfg, run, s, None, "backbone", name=base.metric_prefix + s,
                                                      model=base.model, eval_node=base.eval_node, info=base.info)
                if base.name == PIXELS_UMAP:
                    base.splits = export_pixels_umap(cfg, run, base.splits)
            base.clustered = base.splits[split]
            base.model = None  # exported: its memory is not needed for clustering
            reps.append(base)
    return reps
