"""Graph-based clustering: spectral clustering on an affinity graph (:class:`Spectral`, scikit-learn).
Config: ``configs/clustering/spectral.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.clustering.checks import KEY, check_choice, check_k, check_points, check_positive
from sslcluster.errors import SSLClusterError


@dataclass
class Spectral(ClusteringAlgorithm):
    """Spectral clustering (Ng, Jordan & Weiss 2001; von Luxburg 2007), scikit-learn, on a k-nearest-neighbour
    affinity graph by default (sparse, so it scales past a few thousand points)."""

    k: int = 10
    affinity: str = "nearest_neighbors"
    n_neighbors: int = 10
    gamma: float = 1.0
    assign_labels: str = "cluster_qr"
    seed: int = 0

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        check_choice(self.affinity, "affinity", ("nearest_neighbors", "rbf"))
        check_choice(self.assign_labels, "assign_labels", ("kmeans", "discretize", "cluster_qr"))
        check_positive(self.n_neighbors, "n_neighbors", integer=True)
        check_positive(self.gamma, "gamma")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's spectral clustering -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = check_k(self.k, x.shape[0])
        if self.affinity == "nearest_neighbors" and self.n_neighbors >= x.shape[0]:
            raise SSLClusterError(f"{KEY}.n_neighbors={self.n_neighbors} must be smaller than the number of "
                                  f"samples ({x.shape[0]})")
        from sklearn.cluster import SpectralClustering

        model = SpectralClustering(n_clusters=k, affinity=self.affinity, n_neighbors=int(self.n_neighbors),
                                   gamma=float(self.gamma), assign_labels=self.assign_labels,
                                   random_state=self.seed)
        return model.fit_predict(x).astype(np.int64)
