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
from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import cluster_metrics
from sslcluster.evaluation.probes import knn_accuracy, linear_probe_accuracy
from sslcluster.clustering.preprocess import l2_normalize
from sslcluster.data.resolve import load_image
from sslcluster.evaluation import plots
from sslcluster.evaluation.browse import write_cluster_folders
from sslcluster.naming import read_names
from sslcluster.stages.common import resolve_device
from sslcluster.store.clusters import Clustering, labels_from_csv, load_clustering  # noqa: F401  (importable here)
from sslcluster.store.embeddings import EmbeddingIndex, read_embeddings
from sslcluster.store.io import write_json

log = logging.getLogger(__name__)


_NOTED: set[str] = set()


def note_no_labels(what: str) -> None:
    """Say once per process that label-based figures were skipped because the data have no held-out labels."""
    if what not in _NOTED:
        _NOTED.add(what)
        log.warning("skipped %s: the data have no held-out labels (no class folders); the label-free figures "
                    "(silhouette, intra-/inter-cluster variance, cluster sizes, galleries) are reported", what)


def evaluate_clustering(cfg: DictConfig, cluster_dir: Path) -> dict[str, Any]:
    """External metrics of one clustering, merged with its label-free quality; writes its ``metrics.json``."""
    clustering = Clustering(cluster_dir)
    record, labels_pred = clustering.load()
    index = clustering.index(record, labels_pred)
    labels_true = clustering.held_out_labels(index, cfg.evaluate.labels)
    if not (np.asarray(labels_true) >= 0).any():
        note_no_labels("NMI, ARI, accuracy and purity")
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
            clustering.write_projection(m, sel, xy)  # the same points for other views of the run (FiftyOne)
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


def validation_rows(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted row positions (V,) of a seeded validation subset of ``fraction`` of the labelled train rows
    (stratified by label where every class has two or more rows; scikit-learn's ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    known = np.flatnonzero(labels >= 0)
    y = labels[known]
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=int)
    stratify = y if len(y) and counts[counts > 0].min() >= 2 and fraction * len(y) >= (counts > 0).sum() else None
    _, val = train_test_split(known, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(val)


def validation_metrics(cfg: DictConfig, clustered_train: Path, backbone_train: Path) -> dict[str, Any]:
    """Figures for choosing settings without the test split: ``val_nmi``, ``val_ari``, ``val_acc`` of the run's
    clustering (preprocessing and algorithm as configured, k as given) fitted on a seeded validation subset of the
    train split (``evaluate.validation.fraction``), and ``val_knn_top1``: kNN of that subset against the rest of the
    train split. The subset is clustered as the cluster stage clusters a split (:func:`~sslcluster.stages.cluster.
    cluster_rows`: a streaming algorithm fitted on a sample and every row assigned), so what is tuned here is the
    pipeline the test clustering runs. The labels of the subset serve selection only; the test split's figures stay
    the final ones."""
    from sslcluster.clustering.preprocess import PreprocessConfig
    from sslcluster.evaluation.metrics import external_metrics
    from sslcluster.factory import build
    from sslcluster.stages.cluster import cluster_rows

    vcfg = cfg.evaluate.get("validation") or {}
    fraction = float(vcfg.get("fraction", 0.0) or 0.0)
    if fraction <= 0:
        return {}
    if not fraction < 1:
        raise SSLClusterError(f"evaluate.validation.fraction={fraction} must be below 1")
    es = read_embeddings(clustered_train, with_labels=True)
    labels = es.index.labels
    if labels is None or not (labels >= 0).any():
        log.info("no validation figures: the train split has no labels")
        return {}
    val = validation_rows(labels, fraction, int(vcfg.get("seed", 0)))
    rest = np.setdiff1d(np.arange(len(labels)), val)
    pre_cfg = PreprocessConfig(**OmegaConf.to_container(cfg.clustering.preprocess, resolve=True), seed=cfg.seed)
    algo = build(cfg.clustering.algorithm)
    pred = cluster_rows(cfg, np.asarray(es.array[val], dtype=np.float32), algo, pre_cfg).labels
    ext = external_metrics(labels[val], pred)
    out: dict[str, Any] = {f"val_{k}": ext[k] for k in ("nmi", "ari", "acc")}
    bb = read_embeddings(backbone_train, with_labels=True)
    bx = np.asarray(bb.array, dtype=np.float32)
    out["val_knn_top1"] = knn_accuracy(bx[rest], labels[rest], bx[val], labels[val], k=cfg.evaluate.knn_k,
                                       t=cfg.evaluate.knn_t)
    out["val_n"] = int(len(val))
    return out


def probe_settings(cfg: DictConfig) -> dict[str, Any]:
    """``evaluate.probe`` as keyword arguments of :func:`~sslcluster.evaluation.probes.linear_probe_accuracy`
    (backend, device, and for the torch probe its weight-decay grid, validation fraction, iterations and gradient
    tolerance, preconditioning)."""
    node = OmegaConf.to_container(cfg.evaluate.get("probe") or {}, resolve=True)
    assert isinstance(node, dict)
    backend = str(node.pop("backend", "torch"))
    device = resolve_device(str(node.pop("device", "auto")), key="evaluate.probe.device")
    if backend == "sklearn":
        return {"backend": backend, "device": device}
    known = {"weight_decays", "val_fraction", "max_iter", "tol", "precondition"}
    unknown = set(node) - known
    if unknown:
        raise SSLClusterError(f"evaluate.probe: unknown keys {sorted(unknown)} (known: backend, device, "
                              f"{', '.join(sorted(known))})")
    if "weight_decays" in node:
        node["weight_decays"] = tuple(float(v) for v in node["weight_decays"])
    return {"backend": backend, "device": device, **node}


def evaluate_representation(cfg: DictConfig, train_dir: Path, test_dir: Path) -> dict[str, float]:
    """kNN (train split as bank) and linear-probe top-1 on the test split. The arrays stay memory-mapped: kNN
    reads them in blocks, the probe copies the labelled rows once onto its device."""
    train = read_embeddings(train_dir, with_labels=True)
    test = read_embeddings(test_dir, with_labels=True)
    if train.array.shape[1] != test.array.shape[1]:
        raise SSLClusterError(f"{train_dir} and {test_dir} have different dimensions")
    unlabelled = [name for name, es in (("train", train), ("test", test))
                  if es.index.labels is None or not (np.asarray(es.index.labels) >= 0).any()]
    if unlabelled:  # e.g. a folder of photos without class folders: the label-free figures stand alone
        note_no_labels("kNN and linear-probe accuracy (no labels in the "
                       + (" and ".join(unlabelled) + " splits" if len(unlabelled) > 1 else f"{unlabelled[0]} split")
                       + ")")
        return {}
    assert train.index.labels is not None and test.index.labels is not None
    tx, ty = train.array, train.index.labels
    qx, qy = test.array, test.index.labels
    probe = probe_settings(cfg) if cfg.evaluate.linear_probe else None  # bad settings fail before any work
    out = {"knn_top1": knn_accuracy(tx, ty, qx, qy, k=cfg.evaluate.knn_k, t=cfg.evaluate.knn_t)}
    if probe is not None:
        out["linear_top1"] = linear_probe_accuracy(tx, ty, qx, qy, seed=cfg.seed, **probe)
    return out
