"""Density-based clustering: HDBSCAN (:class:`HDBSCAN`, the ``hdbscan`` package), DBSCAN (:class:`DBSCAN`) and
OPTICS (:class:`OPTICS`), both scikit-learn. Each finds the number of clusters itself; noise is labelled -1.
Configs: ``configs/clustering/{hdbscan,dbscan,optics}.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.clustering.checks import KEY, check_choice, check_points, check_positive
from sslcluster.errors import SSLClusterError


@dataclass
class HDBSCAN(ClusteringAlgorithm):
    """HDBSCAN (Campello et al. 2013; McInnes et al. 2017, the ``hdbscan`` package). Noise stays -1; k is not
    chosen but found. Best after UMAP to a few dimensions (McInnes et al. 2018)."""

    min_cluster_size: int = 15
    min_samples: int | None = None
    cluster_selection_epsilon: float = 0.0
    cluster_selection_method: str = "eom"
    metric: str = "euclidean"
    allow_single_cluster: bool = False
    core_dist_n_jobs: int = 1

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        check_positive(self.min_cluster_size, "min_cluster_size", integer=True)
        if self.min_cluster_size < 2:
            raise SSLClusterError(f"{KEY}.min_cluster_size={self.min_cluster_size} must be at least 2")
        if self.min_samples is not None:
            check_positive(self.min_samples, "min_samples", integer=True)
        if self.cluster_selection_epsilon < 0:
            raise SSLClusterError(f"{KEY}.cluster_selection_epsilon={self.cluster_selection_epsilon} is negative")
        check_choice(self.cluster_selection_method, "cluster_selection_method", ("eom", "leaf"))

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with HDBSCAN -> labels (N,) int64, -1 for noise."""
        self.check()
        x = check_points(x)
        if self.min_cluster_size > x.shape[0]:
            raise SSLClusterError(f"{KEY}.min_cluster_size={self.min_cluster_size} is larger than the number of "
                                  f"samples ({x.shape[0]})")
        import hdbscan

        model = hdbscan.HDBSCAN(min_cluster_size=int(self.min_cluster_size),
                                min_samples=None if self.min_samples is None else int(self.min_samples),
                                cluster_selection_epsilon=float(self.cluster_selection_epsilon),
                                cluster_selection_method=self.cluster_selection_method, metric=self.metric,
                                allow_single_cluster=bool(self.allow_single_cluster),
                                core_dist_n_jobs=int(self.core_dist_n_jobs))
        return model.fit_predict(x.astype(np.float64)).astype(np.int64)


@dataclass
class DBSCAN(ClusteringAlgorithm):
    """DBSCAN (Ester et al. 1996), scikit-learn. Noise stays -1."""

    eps: float = 0.5
    min_samples: int = 5
    metric: str = "euclidean"

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        check_positive(self.eps, "eps")
        check_positive(self.min_samples, "min_samples", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's DBSCAN -> labels (N,) int64, -1 for noise."""
        self.check()
        x = check_points(x)
        from sklearn.cluster import DBSCAN as SKDBSCAN

        return SKDBSCAN(eps=float(self.eps), min_samples=int(self.min_samples),
                        metric=self.metric).fit_predict(x).astype(np.int64)


@dataclass
class OPTICS(ClusteringAlgorithm):
    """OPTICS (Ankerst et al. 1999), scikit-learn: density clusters without a single radius. Orders points by
    reachability and extracts clusters with the xi method (scikit-learn's ``OPTICS``); noise stays -1.
    ``min_cluster_size`` as a fraction of the points (in (0, 1]) or a count; defaults are scikit-learn's."""

    min_samples: int = 5
    xi: float = 0.05
    min_cluster_size: float | None = None
    metric: str = "euclidean"

    def check(self) -> None:
        """Validate the parameters before any work; one-line errors naming the key."""
        check_positive(self.min_samples, "min_samples", integer=True)
        if not (isinstance(self.xi, (int, float)) and not isinstance(self.xi, bool) and 0 < self.xi < 1):
            raise SSLClusterError(f"{KEY}.xi={self.xi!r} must lie between 0 and 1")
        if self.min_cluster_size is not None:
            check_positive(self.min_cluster_size, "min_cluster_size")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """``x`` (N, D) -> labels (N,) int64, -1 for noise."""
        self.check()
        x = check_points(x)
        from sklearn.cluster import OPTICS as SKOPTICS

        return SKOPTICS(min_samples=int(self.min_samples), xi=float(self.xi), metric=self.metric,
                        min_cluster_size=self.min_cluster_size).fit_predict(x).astype(np.int64)
