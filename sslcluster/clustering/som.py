"""Self-organising map clustering (Kohonen 1982), with MiniSom (Vettigli 2018) doing the training.

The map is a ``grid[0] x grid[1]`` lattice of nodes with weight vectors in the input space. Two ways to turn it into
clusters (``mode``):

- ``node``: each node is a cluster; the label of a point is the index of its best-matching unit (BMU),
  ``row * grid[1] + col``. Empty nodes leave gaps in the label ids.
- ``kmeans`` / ``agglomerative``: the node weights (grid[0]*grid[1], D) are clustered into ``k`` groups and each
  point takes its BMU's group (the two-level approach of Vesanto & Alhoniemi 2000).

The fitted weights and each point's BMU are kept (:meth:`SOM.artifacts`) so that evaluation can draw the U-matrix
and the hit map with the held-out labels, which never reach the fit. The BMUs follow the rows given; after a fit on
shuffled rows :meth:`SOM.restore_row_order` puts them back in the original order. Config:
``configs/clustering/som.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.clustering.checks import KEY, LINKAGES, check_choice, check_k, check_points
from sslcluster.errors import SSLClusterError

MODES = ("node", "kmeans", "agglomerative")


def best_matching_units(x: np.ndarray, weights: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest node (Euclidean) of every row: ``x`` (N, D), ``weights`` (M, D) -> (N,) int64."""
    w = np.asarray(weights, dtype=np.float32)
    w2 = (w ** 2).sum(axis=1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        d = w2[None, :] - 2.0 * (xb @ w.T)  # ||x||^2 is constant per row
        out[s:s + chunk] = d.argmin(axis=1)
    return out


def u_matrix(weights: np.ndarray) -> np.ndarray:
    """Mean distance of each node to its 4-neighbours: ``weights`` (X, Y, D) -> (X, Y) (Ultsch & Siemon 1990)."""
    gx, gy, _ = weights.shape
    um = np.zeros((gx, gy))
    cnt = np.zeros((gx, gy))
    for dx, dy in ((1, 0), (0, 1)):
        d = np.linalg.norm(weights[dx:, dy:] - weights[:gx - dx, :gy - dy], axis=-1)
        um[dx:, dy:] += d
        cnt[dx:, dy:] += 1
        um[:gx - dx, :gy - dy] += d
        cnt[:gx - dx, :gy - dy] += 1
    return um / np.maximum(cnt, 1)


@dataclass
class SOM(ClusteringAlgorithm):
    """A rectangular self-organising map; see the module docstring for ``mode``.

    ``sigma`` is the initial neighbourhood radius (in nodes) and ``learning_rate`` the initial step; both decay
    asymptotically over ``iterations`` single-sample updates (MiniSom's ``train`` with random order).
    ``init``: ``pca`` spans the grid over the first two principal components (deterministic, usually faster to
    organise), ``random`` starts from random samples.
    """

    grid: list[int] = field(default_factory=lambda: [10, 10])
    sigma: float = 1.0
    learning_rate: float = 0.5
    iterations: int = 10_000
    init: str = "pca"
    neighborhood: str = "gaussian"
    mode: str = "kmeans"
    k: int | None = 10
    linkage: str = "ward"
    seed: int = 0
    weights: np.ndarray | None = field(default=None, init=False, repr=False)      # (X, Y, D)
    bmu: np.ndarray | None = field(default=None, init=False, repr=False)          # (N,) node index
    node_labels: np.ndarray | None = field(default=None, init=False, repr=False)  # (X*Y,) cluster per node
    quantization_error: float | None = field(default=None, init=False)
    assigned_bmu: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    fit_fields = ("quantization_error",)
    assigns_new_points = True

    def check(self) -> None:
        """Validate the parameters (before any work)."""
        self._grid()

    def _grid(self) -> tuple[int, int]:
        """The grid shape, after validating every parameter."""
        grid = list(self.grid) if isinstance(self.grid, (list, tuple)) else None
        if (grid is None or len(grid) != 2
                or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1 for g in grid)):
            raise SSLClusterError(f"{KEY}.grid={self.grid!r} must be two positive integers, e.g. [10, 10]")
        for name in ("sigma", "learning_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
                raise SSLClusterError(f"{KEY}.{name}={v!r} must be positive")
        if (isinstance(self.iterations, bool) or not isinstance(self.iterations, (int, np.integer))
                or self.iterations < 1):
            raise SSLClusterError(f"{KEY}.iterations={self.iterations!r} must be a positive integer")
        check_choice(self.init, "init", ("pca", "random"))
        check_choice(self.mode, "mode", MODES)
        check_choice(self.neighborhood, "neighborhood", ("gaussian", "mexican_hat", "bubble", "triangle"))
        n_nodes = grid[0] * grid[1]
        if self.mode != "node":
            if self.k is None:
                raise SSLClusterError(f"{KEY}.k=None: mode {self.mode!r} needs k (or use mode=node)")
            if n_nodes < self.k:
                raise SSLClusterError(f"{KEY}.grid={grid} has {n_nodes} nodes, fewer than {KEY}.k={self.k}: "
                                      "use a larger grid or a smaller k")
            check_choice(self.linkage, "linkage", LINKAGES)
        return int(grid[0]), int(grid[1])

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """``x`` (N, D) -> labels (N,) int64."""
        gx, gy = self._grid()
        x = check_points(x)
        if self.mode != "node":
            check_k(self.k, x.shape[0])
        if self.init == "pca" and (x.shape[0] < 2 or x.shape[1] < 2):
            raise SSLClusterError(f"{KEY}.init='pca' needs at least 2 samples and 2 dimensions, got {x.shape}")
        from minisom import MiniSom

        som = MiniSom(gx, gy, x.shape[1], sigma=float(self.sigma), learning_rate=float(self.learning_rate),
                      neighborhood_function=self.neighborhood, random_seed=int(self.seed))
        xd = x.astype(np.float64)
        if self.init == "pca":
            som.pca_weights_init(xd)
        else:
            som.random_weights_init(xd)
        som.train(xd, int(self.iterations), random_order=True)
        self.weights = som.get_weights().astype(np.float32)
        flat = self.weights.reshape(gx * gy, -1)
        self.bmu = best_matching_units(x, flat)
        self.quantization_error = float(np.linalg.norm(x - flat[self.bmu], axis=1).mean())
        if self.mode == "node":
            self.node_labels = np.arange(gx * gy, dtype=np.int64)
        else:
            self.node_labels = self._cluster_nodes(flat, np.bincount(self.bmu, minlength=gx * gy))
        return self.node_labels[self.bmu]

    def fit(self, x: np.ndarray) -> None:
        """Train the map on ``x`` (T, D) (``clustering.fit_split``); :meth:`assign` labels other points."""
        self.fit_predict(x)

    def restore_row_order(self, inverse: np.ndarray) -> None:
        """The winning nodes of a fit on shuffled rows, put back in the original row order (``inverse`` (N,): see
        :meth:`ClusteringAlgorithm.restore_row_order`), so ``som_bmu.npy`` lines up with ``labels.npy``."""
        if self.bmu is not None:
            self.bmu = self.bmu[inverse]

    def start_assign(self) -> None:
        """Begin a pass of :meth:`assign`: the winning nodes it collects replace the fitted points' ones."""
        self.assigned_bmu = []

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """Labels (B,) int64 of ``block`` (B, D): the cluster of each point's best-matching node."""
        if self.weights is None or self.node_labels is None:
            raise RuntimeError("SOM.assign before fit")
        block = np.asarray(block, dtype=np.float32) if checked else check_points(block)
        bmu = best_matching_units(block, self.weights.reshape(-1, self.weights.shape[-1]))
        self.assigned_bmu.append(bmu)
        self.bmu = np.concatenate(self.assigned_bmu)  # the pictures show the assigned points
        return self.node_labels[bmu]

    def _cluster_nodes(self, flat: np.ndarray, hits: np.ndarray) -> np.ndarray:
        """Group the node weights (M, D) into k clusters; k-means weighs each node by its hit count, so empty
        nodes (which lie between clusters) do not pull the centroids."""
        k = int(self.k)  # type: ignore[arg-type]
        if self.mode == "kmeans":
            from sklearn.cluster import KMeans as SKKMeans

            w = hits.astype(np.float64) if hits.sum() > 0 else None
            if w is not None and (w > 0).sum() < k:
                w = w + 1e-3  # fewer hit nodes than k: let empty nodes take part
            km = SKKMeans(n_clusters=k, n_init=10, random_state=self.seed)
            return km.fit(flat, sample_weight=w).predict(flat).astype(np.int64)
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=k, linkage=self.linkage).fit_predict(flat).astype(np.int64)

    def artifacts(self) -> dict[str, np.ndarray]:
        """Arrays the cluster stage saves beside ``labels.npy`` for the evaluation pictures."""
        if self.weights is None:
            return {}
        return {"som_weights": self.weights, "som_bmu": self.bmu, "som_node_labels": self.node_labels}

    def choosable_k(self) -> str | None:
        """k selection sets ``k`` of the node clustering; mode ``node`` has one cluster per node."""
        if self.mode == "node":
            return ("SOM mode 'node' has one cluster per node; set clustering.algorithm.mode to kmeans or "
                    "agglomerative to choose k")
        return None
