"""Clustering algorithms behind one interface: ``fit_predict(x: (N, D) float32) -> labels (N,) int64``.

Noise (where an algorithm has it) is labelled -1. Algorithms are thin wrappers over scikit-learn, faiss and
hdbscan; each is a dataclass instantiated from ``configs/clustering/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sslcluster.errors import SSLClusterError

#: above this many points ``backend: auto`` uses faiss (measured faster there, see benchmarks/).
FAISS_AUTO_MIN_POINTS = 20_000


def _check_k(k: int, n: int) -> None:
    if k < 1:
        raise SSLClusterError(f"clustering.algorithm.k={k} must be at least 1")
    if k > n:
        raise SSLClusterError(f"clustering.algorithm.k={k} is larger than the number of samples ({n})")


@dataclass
class KMeans:
    """Lloyd's k-means with k-means++ (scikit-learn) or faiss's k-means, ``n_init`` restarts, best inertia kept."""

    k: int = 10
    backend: str = "auto"
    n_init: int = 10
    max_iter: int = 300
    seed: int = 0
    centroids: np.ndarray | None = field(default=None, init=False, repr=False)
    inertia: float | None = field(default=None, init=False)

    def resolved_backend(self, n: int) -> str:
        if self.backend not in ("auto", "sklearn", "faiss"):
            raise SSLClusterError(f"clustering.algorithm.backend={self.backend!r}: use auto, sklearn or faiss")
        if self.backend == "auto":
            return "faiss" if n >= FAISS_AUTO_MIN_POINTS else "sklearn"
        return self.backend

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        _check_k(self.k, x.shape[0])
        if self.resolved_backend(x.shape[0]) == "faiss":
            import faiss

            km = faiss.Kmeans(x.shape[1], self.k, niter=self.max_iter, nredo=self.n_init, seed=self.seed,
                              verbose=False, max_points_per_centroid=max(256, x.shape[0] // self.k + 1))
            km.train(np.ascontiguousarray(x, dtype=np.float32))
            dist, labels = km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
            self.centroids = km.centroids
            self.inertia = float(dist.sum())
            return labels[:, 0].astype(np.int64)
        from sklearn.cluster import KMeans as SKKMeans

        km = SKKMeans(n_clusters=self.k, n_init=self.n_init, max_iter=self.max_iter, random_state=self.seed)
        labels = km.fit_predict(x)
        self.centroids = km.cluster_centers_.astype(np.float32)
        self.inertia = float(km.inertia_)
        return labels.astype(np.int64)
