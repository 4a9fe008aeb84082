"""Research validity of what the cluster and evaluate stages report: internal metrics in one declared space, rows
in a seeded random order before clustering (and mapped back), labels and ids kept aligned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from sslcluster.config import compose
from sslcluster.pipeline import stage_cluster
from tests.test_clustering_errors import make_run

class OrderRecorder:
    """A clustering 'algorithm' that records the rows it is given and labels each row by its own content (column 0
    holds the row's original position), so the test can check the order it saw and the mapping back."""

    def __init__(self, record_path: str, **_: Any) -> None:
        self.record_path = record_path  # hydra imports this module apart from pytest's copy: record to a file

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        np.save(self.record_path, np.asarray(x))
        return (np.rint(x[:, 0]).astype(np.int64) % 7)


def test_rows_reach_the_algorithm_shuffled_and_labels_map_back(tmp_path):
    n = 90
    classes = np.repeat(np.arange(3), n // 3)  # exported rows are sorted by class, as a folder split is
    x = np.zeros((n, 4), dtype=np.float32)
    x[:, 0] = np.arange(n)
    x[:, 1] = classes
    run = make_run(tmp_path / "runs", x, classes)
    stage_cluster(compose([f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "clustering.preprocess.l2=false",
                           "clustering.algorithm._target_=tests.test_validity.OrderRecorder",
                           f"+clustering.algorithm.record_path={tmp_path / 'seen.npy'}"]))
    seen = np.load(tmp_path / "seen.npy")[:, 0].astype(int)
    assert sorted(seen.tolist()) == list(range(n))
    # not in the exported (class-sorted) order: the first third is not all one class
    assert len(set(classes[seen[: n // 3]].tolist())) == 3
    labels = np.load(run / "clusters" / "kmeans-test" / "labels.npy")
    np.testing.assert_array_equal(labels, np.arange(n) % 7)  # each row keeps the label computed from its own content
    record = json.loads((run / "clusters" / "kmeans-test" / "record.json").read_text())
    assert record["row_order"].startswith("seeded permutation")


def test_internal_metrics_are_measured_in_one_declared_space(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    classes = np.repeat(np.arange(3), n // 3)
    x = (rng.standard_normal((n, 16)) + 3 * np.eye(16)[classes]).astype(np.float32) * 5.0  # far from the sphere
    run = make_run(tmp_path / "runs", x, classes)
    base = [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "clustering.algorithm.k=3"]
    stage_cluster(compose(base + ["cluster.key=plain"]))
    stage_cluster(compose(base + ["cluster.key=pca", "clustering.preprocess.pca_dim=2"]))
    recs = {k: json.loads((run / "clusters" / k / "record.json").read_text()) for k in ("plain", "pca")}
    for k, rec in recs.items():
        labels = np.load(run / "clusters" / k / "labels.npy")
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)  # the declared space: L2-normalised, before PCA/UMAP
        q = rec["quality"]
        assert q["silhouette"] == pytest.approx(skm.silhouette_score(xn, labels), rel=1e-5), k
        assert q["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(xn, labels), rel=1e-5), k
        assert rec["quality_space"].startswith("l2-normalised embeddings before PCA")
        assert "var_ratio" not in q
