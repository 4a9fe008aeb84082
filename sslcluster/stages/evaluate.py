"""Stage 4: score clusterings and representations against held-out labels.

Labels come from the embeddings' ``index.csv`` (or a CSV of ``id,label`` given as ``evaluate.labels``); they are
read here and nowhere upstream. Pictures (``evaluate.plots``) go to ``clusters/<key>/plots/`` and, when asked
(``evaluate.folders=symlink|copy``), every image to ``clusters/<key>/folders/cluster_<id>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import cluster_metrics
from sslcluster.evaluation.probes import knn_accuracy, linear_probe_accuracy
from sslcluster.clustering.preprocess import l2_normalize
from sslcluster.data.resolve import load_image
from sslcluster.evaluation import plots
from sslcluster.evaluation.browse import write_cluster_folders
from sslcluster.naming import read_names
from sslcluster.store.clusters import Clustering, labels_from_csv, load_clustering  # noqa: F401  (importable here)
from sslcluster.store.embeddings import EmbeddingIndex, read_embeddings
from sslcluster.store.io import write_json

log = logging.getLogger(__name__)


def evaluate_clustering(cfg: DictConfig, cluster_dir: Path) -> dict[str, Any]:
    """External metrics of one clustering, merged with its label-free quality; writes its ``metrics.json``."""
    clustering = Clustering(cluster_dir)
    record, labels_pred = clustering.load()
    index = clustering.index(record, labels_pred)
    labels_true = clustering.held_out_labels(index, cfg.evaluate.labels)
    metrics = cluster_metrics(None, labels_pred, labels_true)
    metrics.update({k: v for k, v in record.get("quality", {}).items() if k not in metrics})
    if record.get("select_k"):
        metrics["chosen_k"] = record["select_k"]["chosen_k"]
    write_json(cluster_dir / "metrics.json", metrics)
    plots_cfg = cfg.evaluate.get("plots")
    if plots_cfg is not None and plots_cfg.get("enabled", False):
        evaluation_plots(cfg, cluster_dir, record, index, labels_pred, labels_true)
    folders = cfg.evaluate.get("folders")
    if folders:
        cluster_folders(cfg, cluster_dir, index, labels_pred, str(folders))
    return metrics


def _image_loader(cfg: DictConfig, clustering: Clustering) -> Callable[[str], Any]:
    """Reads an image of the clustering's index (``torchvision:`` paths under the run's data root)."""
    fallback = cfg.data.source.get("root") if "source" in cfg.data else None
    root = clustering.data_root(str(fallback) if fallback is not None else None)
    return lambda p: load_image(p, torchvision_root=root)


def evaluation_plots(cfg: DictConfig, cluster_dir: Path, record: dict[str, Any], index: EmbeddingIndex,
                     labels_pred: np.ndarray, labels_true: np.ndarray) -> list[Path]:
    """Scatter plots, sample grid, confusion matrix and (SOM) U-matrix and hit map in ``<cluster_dir>/plots``."""
    clustering = Clustering(cluster_dir)
    pc = cfg.evaluate.plots
    out = cluster_dir / "plots"
    written: list[Path] = []
    names = index.classes
    cluster_names = {c: v["name"] for c, v in read_names(cluster_dir).items()}  # from names.json, if named
    projections = list(pc.get("projections") or [])
    for m in projections:
        if m not in plots.PROJECTIONS:
            raise SSLClusterError(f"evaluate.plots.projections: {m!r} is not one of {', '.join(plots.PROJECTIONS)}")
    if projections:
        es = clustering.read_embeddings(record, labels_pred)
        sel = plots.subsample(len(labels_pred), int(pc.max_points), cfg.seed)
        x = np.asarray(es.array[sel], dtype=np.float32)
        if "l2" in record.get("preprocess", []):
            x = l2_normalize(x)
        for m in projections:
            xy = plots.project_2d(x, m, seed=cfg.seed)
            written.append(plots.scatter_2d(xy, labels_pred[sel], labels_true[sel], out / f"scatter_{m}.png", m,
                                            names, title=f"{record['key']} ({record['algorithm']})",
                                            cluster_names=cluster_names))
    if int(pc.get("images_per_cluster", 0)) > 0:
        written.append(plots.sample_grid(index.paths, labels_pred, out / "samples.png", _image_loader(cfg, clustering),
                                         per_cluster=int(pc.images_per_cluster),
                                         max_clusters=int(pc.max_clusters), seed=cfg.seed,
                                         cluster_names=cluster_names))
    if (labels_true >= 0).any():
        written.append(plots.confusion_matrix(labels_true, labels_pred, out / "confusion.png", names))
    written += plots.artifact_pictures(clustering.artifacts(record), labels_pred, labels_true, out, names,
                                       seed=cfg.seed)
    log.info("wrote %d pictures to %s", len(written), out)
    return written


def redraw_plots(cfg: DictConfig, cluster_dir: Path) -> list[Path]:
    """Draw a clustering's pictures again (after naming, so the names appear in them), if plots are enabled."""
    plots_cfg = cfg.evaluate.get("plots")
    if plots_cfg is None or not plots_cfg.get("enabled", False):
        return []
    clustering = Clustering(cluster_dir)
    record, labels_pred = clustering.load()
    index = clustering.index(record, labels_pred)
    labels_true = clustering.held_out_labels(index, cfg.evaluate.labels)
    return evaluation_plots(cfg, cluster_dir, record, index, labels_pred, labels_true)


def cluster_folders(cfg: DictConfig, cluster_dir: Path, index: EmbeddingIndex, labels_pred: np.ndarray,
                    mode: str) -> Path:
    """Every image of the clustering into ``<cluster_dir>/folders/cluster_<id>/`` (``mode``: symlink | copy)."""
    out = write_cluster_folders(cluster_dir / "folders", index.ids, index.paths, labels_pred, mode,
                                load=_image_loader(cfg, Clustering(cluster_dir)))
    log.info("per-cluster folders: %s", out)
    return out


def evaluate_representation(cfg: DictConfig, train_dir: Path, test_dir: Path) -> dict[str, float]:
    """kNN (train split as bank) and linear-probe top-1 on the test split."""
    train = read_embeddings(train_dir, with_labels=True)
    test = read_embeddings(test_dir, with_labels=True)
    if train.array.shape[1] != test.array.shape[1]:
        raise SSLClusterError(f"{train_dir} and {test_dir} have different dimensions")
    tx, ty = np.asarray(train.array, dtype=np.float32), train.index.labels
    qx, qy = np.asarray(test.array, dtype=np.float32), test.index.labels
    out = {"knn_top1": knn_accuracy(tx, ty, qx, qy, k=cfg.evaluate.knn_k, t=cfg.evaluate.knn_t)}
    if cfg.evaluate.linear_probe:
        out["linear_top1"] = linear_probe_accuracy(tx, ty, qx, qy, seed=cfg.seed)
    return out
