"""OPTICS (Ankerst et al. 1999) by scikit-learn: density clusters without a single radius; noise is labelled -1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.clustering.algorithms import KEY, _check_positive, check_points
from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.errors import SSLClusterError


@dataclass
class OPTICS(ClusteringAlgorithm):
    """Orders points by reachability and extracts clusters with the xi method (scikit-learn's ``OPTICS``).
    ``min_cluster_size`` as a fraction of the points (in (0, 1]) or a count; defaults are scikit-learn's."""

    min_samples: int = 5
    xi: float = 0.05
    min_cluster_size: float | None = None
    metric: str = "euclidean"

    def check(self) -> None:
        """Validate the parameters before any work; one-line errors naming the key."""
        _check_positive(self.min_samples, "min_samples", integer=True)
        if not (isinstance(self.xi, (int, float)) and not isinstance(self.xi, bool) and 0 < self.xi < 1):
            raise SSLClusterError(f"{KEY}.xi={self.xi!r} must lie between 0 and 1")
        if self.min_cluster_size is not None:
            _check_positive(self.min_cluster_size, "min_cluster_size")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """``x`` (N, D) -> labels (N,) int64, -1 for noise."""
        self.check()
        x = check_points(x)
        from sklearn.cluster import OPTICS as SKOPTICS

        return SKOPTICS(min_samples=int(self.min_samples), xi=float(self.xi), metric=self.metric,
                        min_cluster_size=self.min_cluster_size).fit_predict(x).astype(np.int64)
