"""Reading a clustering folder ``clusters/<key>/`` (``record.json`` + ``labels.npy``), as the cluster stage
writes it (:mod:`sslcluster.stages.cluster`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.store.io import read_json


def load_clustering(cluster_dir: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(record, labels)`` of a complete clustering; labels are int64, shape (N,), -1 for noise."""
    cluster_dir = Path(cluster_dir)
    rec_path = cluster_dir / "record.json"
    if not rec_path.is_file():
        raise SSLClusterError(f"no clustering at {cluster_dir} (record.json missing); run the cluster stage first")
    record = read_json(rec_path)
    if record.get("status") != "complete":
        raise SSLClusterError(f"{rec_path}: status is {record.get('status')!r}, not 'complete'")
    lpath = cluster_dir / "labels.npy"
    if not lpath.is_file():
        raise SSLClusterError(f"{lpath} is missing")
    labels = np.load(lpath)
    if labels.ndim != 1:
        raise SSLClusterError(f"{lpath}: expected a 1-D array of labels, got shape {labels.shape}")
    return record, labels
