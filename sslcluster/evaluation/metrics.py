"""Cluster metrics against held-out labels, and label-free cluster quality.

Conventions:
- ``labels_pred == -1`` is noise. External metrics score every labelled point. NMI, AMI and ARI (scikit-learn)
  see noise as one more cluster; accuracy and purity never map noise to a class, so every noise point counts as
  an error (noise costs accuracy instead of being dropped, and cannot earn any).
- Internal metrics (variances, silhouette, Davies-Bouldin, Calinski-Harabasz) use the non-noise points only.
- Hungarian accuracy follows SCAN (Van Gansbeke et al. 2020): the one-to-one cluster-to-class assignment that
  maximises matches (``scipy.optimize.linear_sum_assignment``, Kuhn 1955). When there are more (non-noise)
  clusters than classes a one-to-one match leaves clusters unmatched, so ``acc`` is then the many-to-one majority
  mapping (= purity) and ``acc_mapping`` says which was used.
- Intra-cluster variance is the mean squared distance of a point to its cluster's centroid, inter-cluster
  variance the size-weighted mean squared distance of the centroids to the mean of the non-noise points; they add
  up to the total variance (sum over dimensions), and ``var_ratio = inter / intra``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from sslcluster.errors import SSLClusterError

#: the silhouette is O(N^2): above this many points it is estimated on a fixed random sample of this size.
SILHOUETTE_SAMPLE = 10_000


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (n_clusters, n_classes) and the cluster and class ids of its rows and columns."""
    clusters, ci = np.unique(labels_pred, return_inverse=True)
    classes, ki = np.unique(labels_true, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (ci, ki), 1)
    return table, clusters, classes


def cluster_to_class(labels_true: np.ndarray, labels_pred: np.ndarray,
                     mapping: str = "hungarian") -> dict[int, int]:
    """Cluster id -> class id, by the one-to-one Hungarian assignment or the many-to-one majority; noise (-1) and
    (one-to-one) unmatched clusters are absent."""
    table, clusters, classes = contingency(labels_true, labels_pred)
    keep = clusters >= 0
    table, clusters = table[keep], clusters[keep]
    if len(clusters) == 0:
        return {}
    if mapping == "hungarian":
        rows, cols = linear_sum_assignment(table, maximize=True)
    elif mapping == "majority":
        rows, cols = np.arange(len(clusters)), table.argmax(axis=1)
    else:
        raise ValueError(f"mapping {mapping!r}")
    return {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}


def mapped_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray, mapping: str) -> float:
    """Fraction of points whose cluster maps to their class (noise and unmatched clusters count as wrong)."""
    m = cluster_to_class(labels_true, labels_pred, mapping)
    if len(labels_true) == 0:
        return float("nan")
    mapped = np.array([m.get(int(c), np.iinfo(np.int64).min) for c in labels_pred], dtype=np.int64)
    return float((mapped == np.asarray(labels_true)).mean())


def hungarian_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Best one-to-one cluster -> class matching accuracy; noise is never matched."""
    return mapped_accuracy(labels_true, labels_pred, "hungarian")


def purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Many-to-one: each (non-noise) cluster takes its majority class; noise points count as wrong."""
    return mapped_accuracy(labels_true, labels_pred, "majority")


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
    """All metrics for one clustering: ``labels_pred`` (N,) int, -1 noise; ``x`` (N, D) the points that were
    clustered (for the internal metrics; None skips them); ``labels_true`` (N,) held-out labels (None skips the
    external metrics), -1 where unknown: those points are left out of the external metrics."""
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
            n_pred = len(np.unique(p[p >= 0]))
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
            sample = SILHOUETTE_SAMPLE if len(ys) > SILHOUETTE_SAMPLE else None
            out["silhouette"] = float(skm.silhouette_score(xs, ys, sample_size=sample, random_state=0))
            out["davies_bouldin"] = float(skm.davies_bouldin_score(xs, ys))
            out["calinski_harabasz"] = float(skm.calinski_harabasz_score(xs, ys))
        else:
            out.update({"silhouette": float("nan"), "davies_bouldin": float("nan"),
                        "calinski_harabasz": float("nan")})
    return out
