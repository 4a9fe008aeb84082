"""Stage 4: score clusterings and representations against held-out labels.

Labels come from the embeddings' ``index.csv`` (or a CSV of ``id,label`` given as ``evaluate.labels``); they are
read here and nowhere upstream.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import cluster_metrics
from sslcluster.evaluation.probes import knn_accuracy, linear_probe_accuracy
from sslcluster.tracking.embeddings import EmbeddingIndex, read_embeddings, read_index
from sslcluster.tracking.io import read_json, write_json


def labels_from_csv(path: str | Path, ids: list[str]) -> np.ndarray:
    """Labels for ``ids`` from a CSV with columns id,label; every id must be present."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SSLClusterError(f"labels file not found: {path}")
    table: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise SSLClusterError(f"{path}: expected columns id,label, got {reader.fieldnames}")
        for row in reader:
            try:
                table[row["id"]] = int(row["label"]) if row["label"] != "" else -1
            except ValueError:
                raise SSLClusterError(f"{path}: label {row['label']!r} of id {row['id']!r} is not an integer") from None
    missing = [i for i in ids if i not in table]
    if missing:
        raise SSLClusterError(f"{path}: {len(missing)} of {len(ids)} embedding ids have no label "
                              f"(first: {missing[:3]}); the labels file does not match the embeddings")
    return np.asarray([table[i] for i in ids], dtype=np.int64)


def load_clustering(cluster_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    rec_path = cluster_dir / "record.json"
    if not rec_path.exists():
        raise SSLClusterError(f"no clustering at {cluster_dir} (record.json missing)")
    record = read_json(rec_path)
    if record.get("status") != "complete":
        raise SSLClusterError(f"{rec_path}: status is {record.get('status')!r}, not 'complete'")
    labels = np.load(cluster_dir / "labels.npy")
    return record, labels


def evaluate_clustering(cfg: DictConfig, cluster_dir: Path) -> dict[str, Any]:
    """External metrics of one clustering, merged with its label-free quality; writes its ``metrics.json``."""
    record, labels_pred = load_clustering(cluster_dir)
    index: EmbeddingIndex = read_index(record["embeddings"], with_labels=True)
    if index.ids_sha256() != record["ids_sha256"] or len(index) != len(labels_pred):
        raise SSLClusterError(f"{cluster_dir}: its labels.npy ({len(labels_pred)} rows) does not match the ids of "
                              f"{record['embeddings']} ({len(index)} rows)")
    labels_true = labels_from_csv(cfg.evaluate.labels, index.ids) if cfg.evaluate.labels else index.labels
    metrics = cluster_metrics(None, labels_pred, labels_true)
    metrics.update({k: v for k, v in record.get("quality", {}).items() if k not in metrics})
    write_json(cluster_dir / "metrics.json", metrics)
    return metrics


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
