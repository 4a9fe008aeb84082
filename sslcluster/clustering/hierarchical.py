"""Hierarchical clustering: agglomerative clustering (:class:`Agglomerative`) and BIRCH (:class:`Birch`), both
scikit-learn. Configs: ``configs/clustering/{agglomerative,birch}.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.clustering.checks import KEY, LINKAGES, check_choice, check_k, check_points, check_positive
from sslcluster.errors import SSLClusterError


@dataclass
class Agglomerative(ClusteringAlgorithm):
    """Agglomerative clustering (scikit-learn) with ward (Ward 1963), average, complete or single linkage. Memory
    grows as N^2, so inputs above ``max_points`` are refused rather than exhausting the machine."""

    k: int = 10
    linkage: str = "ward"
    metric: str = "euclidean"
    max_points: int = 30_000

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting (ward linkage needs euclidean)."""
        check_choice(self.linkage, "linkage", LINKAGES)
        if self.linkage == "ward" and self.metric != "euclidean":
            raise SSLClusterError(f"{KEY}.metric={self.metric!r}: ward linkage needs metric euclidean")
        check_positive(self.max_points, "max_points", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Points (N, D) -> agglomerative labels (N,) int64 of ``k`` clusters; refuses above ``max_points``."""
        self.check()
        x = check_points(x)
        k = check_k(self.k, x.shape[0])
        if x.shape[0] > self.max_points:
            raise SSLClusterError(f"agglomerative clustering of {x.shape[0]} points needs O(N^2) memory; above "
                                  f"{KEY}.max_points={self.max_points} (raise it, or use kmeans / birch)")
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=k, linkage=self.linkage,
                                       metric=self.metric).fit_predict(x).astype(np.int64)


@dataclass
class Birch(ClusteringAlgorithm):
    """BIRCH (Zhang et al. 1996), scikit-learn: a CF tree of subclusters, merged into ``k`` clusters by
    agglomerative clustering (``k: null`` keeps the subclusters)."""

    k: int | None = 10
    threshold: float = 0.05
    branching_factor: int = 50

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        check_positive(self.threshold, "threshold")
        check_positive(self.branching_factor, "branching_factor", integer=True)
        if self.branching_factor < 2:
            raise SSLClusterError(f"{KEY}.branching_factor={self.branching_factor} must be at least 2")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with BIRCH (subclusters merged to ``k`` when set) -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = None if self.k is None else check_k(self.k, x.shape[0])
        from sklearn.cluster import Birch as SKBirch

        model = SKBirch(n_clusters=None, threshold=float(self.threshold), branching_factor=int(self.branching_factor))
        model.fit(x)
        n_sub = len(model.subcluster_centers_)
        if k is not None and n_sub < k:
            raise SSLClusterError(f"BIRCH found {n_sub} subclusters, fewer than {KEY}.k={k}: lower "
                                  f"{KEY}.threshold={self.threshold}")
        if k is not None:
            from sklearn.cluster import AgglomerativeClustering

            model.set_params(n_clusters=AgglomerativeClustering(n_clusters=k))
            model.partial_fit()  # global clustering step only, on the existing subclusters
        return model.predict(x).astype(np.int64)
