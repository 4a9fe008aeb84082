"""Cluster metrics against held-out labels, and label-free cluster quality.

Conventions:
- ``labels_pred == -1`` is noise. External metrics (NMI, AMI, ARI, accuracy, purity) score every point, with noise
  as one cluster of its own (so noise costs accuracy instead of being dropped); internal metrics (variances,
  silhouette, Davies-Bouldin, Calinski-Harabasz) use the non-noise points only.
- Hungarian accuracy follows SCAN (Van Gansbeke et al. 2020): the one-to-one cluster-to-class assignment that
  maximises matches (``scipy.optimize.linear_sum_assignment``). When there are more clusters than classes a
  one-to-one match leaves clusters unmatched, so ``acc`` is then the many-to-one majority mapping and
  ``acc_mapping`` says which was used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from sslcluster.errors import SSLClusterError


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (n_clusters, n_classes) and the cluster and class ids of its rows and columns."""
    clusters, ci = np.unique(labels_pred, return_inverse=True)
    classes, ki = np.unique(labels_true, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (ci, ki), 1)
    return table, clusters, classes


def hungarian_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Best one-to-one cluster -> class matching accuracy."""
    table, _, _ = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels_true))


def purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Many-to-one: each cluster takes its majority class."""
    table, _, _ = contingency(labels_true, labels_pred)
    return float(table.max(axis=1).sum() / len(labels_true))


def variances(x: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float]:
    """Intra-cluster variance (mean squared distance of a point to its centroid) and inter-cluster variance
    (size-weighted mean squared distance of the centroids to the overall mean), non-noise points only."""
    keep = labels_pred >= 0
    x, y = np.asarray(x[keep], dtype=np.float64), labels_pred[keep]
    if len(y) == 0:
        return float("nan"), float("nan")
    ids, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    centroids = np.zeros((len(ids), x.shape[1]))
    np.add.at(centroids, inv, x)
    centroids /= counts[:, None]
    intra = float(((x - centroids[inv]) ** 2).sum(axis=1).mean())
    inter = float((counts * ((centroids - x.mean(axis=0)) ** 2).sum(axis=1)).sum() / counts.sum())
    return intra, inter


def cluster_metrics(x: np.ndarray | None, labels_pred: np.ndarray,
                    labels_true: np.ndarray | None) -> dict[str, Any]:
    """All metrics for one clustering. ``x`` (N, D) are the points that were clustered (for internal metrics);
    ``labels_true`` may hold -1 for unknown labels: those points are left out of the external metrics."""
    labels_pred = np.asarray(labels_pred, dtype=np.int64)
    n = len(labels_pred)
    if n == 0:
        raise SSLClusterError("no points to evaluate")
    non_noise = labels_pred >= 0
    n_clusters = int(len(np.unique(labels_pred[non_noise])))
    out: dict[str, Any] = {"n_clusters": n_clusters, "noise_fraction": float(1.0 - non_noise.mean()),
                           "n_points": n}
    if labels_true is not None:
        labels_true = np.asarray(labels_true, dtype=np.int64)
        if len(labels_true) != n:
            raise SSLClusterError(f"{len(labels_true)} labels for {n} cluster assignments")
        known = labels_true >= 0
        if known.any():
            t, p = labels_true[known], labels_pred[known]
            n_classes = len(np.unique(t))
            n_pred = len(np.unique(p))
            out.update({
                "nmi": float(skm.normalized_mutual_info_score(t, p)),
                "ami": float(skm.adjusted_mutual_info_score(t, p)),
                "ari": float(skm.adjusted_rand_score(t, p)),
                "purity": purity(t, p),
                "n_labeled": int(known.sum()),
            })
            if n_pred <= n_classes:
                out["acc"], out["acc_mapping"] = hungarian_accuracy(t, p), "hungarian"
            else:
                out["acc"], out["acc_mapping"] = out["purity"], "majority"
    if x is not None:
        if len(x) != n:
            raise SSLClusterError(f"{len(x)} points for {n} cluster assignments")
        intra, inter = variances(x, labels_pred)
        out.update({"intra_var": intra, "inter_var": inter,
                    "var_ratio": inter / intra if intra and intra > 0 else float("nan")})
        xs, ys = x[non_noise], labels_pred[non_noise]
        if 2 <= n_clusters < len(ys):
            out["silhouette"] = float(skm.silhouette_score(xs, ys, sample_size=min(len(ys), 10000), random_state=0))
            out["davies_bouldin"] = float(skm.davies_bouldin_score(xs, ys))
            out["calinski_harabasz"] = float(skm.calinski_harabasz_score(xs, ys))
        else:
            out.update({"silhouette": float("nan"), "davies_bouldin": float("nan"),
                        "calinski_harabasz": float("nan")})
    return out
