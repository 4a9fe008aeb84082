"""Cluster metrics against held-out labels, and label-free cluster quality.

Conventions (the README states the same):

- **Noise** (``labels_pred == -1``, from HDBSCAN or DBSCAN) follows one rule in every metric: a noise point belongs
  to no cluster and is never right. It is never grouped with another point (NMI, AMI and ARI see every noise
  point as a cluster of its own), never mapped to a class (``acc`` and ``purity`` count it as an error), and never
  counted as a point of any cluster (the internal metrics leave it out). Every labelled point stays in the
  denominator. Beside them, the ``*_clustered`` metrics score the clustered (non-noise) points only, with
  ``noise_fraction``; they are the figures to read for a density method that leaves many points as noise (a
  partition of only singletons scores NMI > 0; ``ami`` and ``ari`` are adjusted for chance and do not reward it).
- **NMI** is scikit-learn's ``normalized_mutual_info_score`` with the arithmetic-mean normalisation,
  ``NMI = I(T; P) / ((H(T) + H(P)) / 2)`` (its default, passed explicitly); ``metrics.json`` records it as
  ``nmi_normalization``.
- **acc** is always the one-to-one Hungarian accuracy of SCAN (Van Gansbeke et al. 2020), generalised to any number
  of clusters: the one-to-one cluster-to-class matching with the most matches (``scipy.optimize.
  linear_sum_assignment``, Kuhn 1955); points of unmatched clusters (there are more clusters than classes) and
  noise count as errors. **purity** is the many-to-one figure: each cluster takes its majority class. Purity
  rises with the number of clusters (1.0 with one cluster per point); compare it only at equal k.
- **Internal metrics** (intra/inter-cluster variance, silhouette, Davies-Bouldin, Calinski-Harabasz) are computed
  by the cluster stage in one declared space for every clustering, whatever the preprocessing: the L2-normalised
  embeddings as exported, before PCA or UMAP (:func:`quality_space`), on the non-noise points; above
  ``INTERNAL_SAMPLE`` non-noise points, on a fixed subsample of that size (seed 0). Intra-cluster variance is the
  mean squared distance of a point to its cluster's centroid, inter-cluster variance the size-weighted mean
  squared distance of the centroids to the mean of the points; they add up to the total variance (sum over
  dimensions). Their ratio grows with k; the k-corrected ratio is Calinski-Harabasz,
  ``inter / intra * (N - k) / (k - 1)``, so no separate ratio is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from sslcluster.errors import SSLClusterError

#: internal metrics are computed on at most this many non-noise points (a fixed random subsample above it): the
#: silhouette is O(N^2), and one size for every clustering keeps them comparable.
INTERNAL_SAMPLE = 10_000
#: scikit-learn's working memory (MiB) for the silhouette's chunked distances (its default is 1024).
SILHOUETTE_WORKING_MIB = 64
#: seed of that subsample (fixed, independent of the run's seed, so runs are measured on the same points).
INTERNAL_SAMPLE_SEED = 0
#: NMI's normalisation (scikit-learn's ``average_method``).
NMI_AVERAGE = "arithmetic"
#: what the internal metrics are measured on (recorded in each clustering's record and metrics).
QUALITY_SPACE = "l2-normalised embeddings before PCA/UMAP"


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
    """Best one-to-one cluster -> class matching accuracy, for any number of clusters; noise is never matched."""
    return mapped_accuracy(labels_true, labels_pred, "hungarian")


def purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Many-to-one: each (non-noise) cluster takes its majority class; noise points count as wrong."""
    return mapped_accuracy(labels_true, labels_pred, "majority")


def noise_as_singletons(labels_pred: np.ndarray) -> np.ndarray:
    """``labels_pred`` (N,) with every noise point (-1) given a cluster id of its own (ids above the largest)."""
    p = np.asarray(labels_pred, dtype=np.int64).copy()
    noise = p < 0
    if noise.any():
        start = int(p.max(initial=-1)) + 1
        p[noise] = start + np.arange(int(noise.sum()))
    return p


def external_metrics(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """NMI, AMI, ARI, acc and purity of ``labels_pred`` (N,) against ``labels_true`` (N,), noise by the module's
    rule (never grouped, never matched)."""
    singles = noise_as_singletons(labels_pred)
    return {
        "nmi": float(skm.normalized_mutual_info_score(labels_true, singles, average_method=NMI_AVERAGE)),
        "ami": float(skm.adjusted_mutual_info_score(labels_true, singles, average_method=NMI_AVERAGE)),
        "ari": float(skm.adjusted_rand_score(labels_true, singles)),
        "acc": hungarian_accuracy(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
    }


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


def internal_sample(n: int, size: int = INTERNAL_SAMPLE, seed: int = INTERNAL_SAMPLE_SEED) -> np.ndarray:
    """Sorted positions of the points the internal metrics use: all ``n`` up to ``size``, else a fixed subsample."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def internal_rows(labels_pred: np.ndarray, sample: int = INTERNAL_SAMPLE) -> np.ndarray:
    """Sorted positions of the points the internal metrics of ``labels_pred`` (N,) are computed on: the non-noise
    points, a fixed subsample of ``sample`` of them above that size. Only these rows of the embeddings are read."""
    keep = np.flatnonzero(np.asarray(labels_pred) >= 0)
    return keep[internal_sample(len(keep), sample)]


def internal_metrics(x: np.ndarray, labels_pred: np.ndarray, sample: int = INTERNAL_SAMPLE) -> dict[str, Any]:
    """Variances, silhouette, Davies-Bouldin and Calinski-Harabasz of ``labels_pred`` (N,) on ``x`` (N, D), over
    the non-noise points (a fixed subsample of ``sample`` of them above that size)."""
    labels_pred = np.asarray(labels_pred, dtype=np.int64)
    if len(x) != len(labels_pred):
        raise SSLClusterError(f"{len(x)} points for {len(labels_pred)} cluster assignments")
    keep = internal_rows(labels_pred, sample)
    xs, ys = np.asarray(x[keep], dtype=np.float64), labels_pred[keep]
    intra, inter = variances(xs, ys)
    out: dict[str, Any] = {"intra_var": intra, "inter_var": inter, "internal_n": int(len(ys))}
    n_clusters = len(np.unique(ys))
    if 2 <= n_clusters < len(ys):
        from sklearn import config_context

        # scikit-learn computes the silhouette's pairwise distances in chunks of ``working_memory`` MiB (default
        # 1024): capped, the cluster stage's peak memory stays bounded; the figure is the same
        with config_context(working_memory=SILHOUETTE_WORKING_MIB):
            out["silhouette"] = float(skm.silhouette_score(xs, ys))
        out["davies_bouldin"] = float(skm.davies_bouldin_score(xs, ys))
        out["calinski_harabasz"] = float(skm.calinski_harabasz_score(xs, ys))
    else:
        out.update({"silhouette": float("nan"), "davies_bouldin": float("nan"), "calinski_harabasz": float("nan")})
    return out


def quality_space(embeddings: np.ndarray) -> np.ndarray:
    """The declared space of the internal metrics: embeddings (N, D) L2-normalised, as float32, before any PCA or
    UMAP (the same for every clustering of the same embeddings, whatever its preprocessing)."""
    from sslcluster.clustering.preprocess import l2_normalize

    return l2_normalize(np.asarray(embeddings, dtype=np.float32))


def cluster_metrics(x: np.ndarray | None, labels_pred: np.ndarray,
                    labels_true: np.ndarray | None) -> dict[str, Any]:
    """All metrics for one clustering: ``labels_pred`` (N,) int, -1 noise; ``x`` (N, D) the points of the internal
    metrics (the cluster stage passes :func:`quality_space`; None skips them); ``labels_true`` (N,) held-out labels
    (None skips the external metrics), -1 where unknown: those points are left out of the external metrics."""
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
            out.update(external_metrics(t, p))
            out.update({"n_labeled": int(known.sum()), "nmi_normalization": NMI_AVERAGE})
            if (p < 0).any():  # density methods: the same metrics over the clustered points, beside the noise
                clustered = p >= 0
                out["noise_fraction_labeled"] = float(1.0 - clustered.mean())
                if clustered.any():
                    out.update({f"{k}_clustered": v for k, v in external_metrics(t[clustered], p[clustered]).items()})
    if x is not None:
        out.update(internal_metrics(x, labels_pred))
    return out
