"""Clustering algorithms behind one interface: ``fit_predict(x: (N, D) float32) -> labels (N,) int64``.

Noise (where an algorithm has it: HDBSCAN, DBSCAN) is labelled -1. Algorithms are thin wrappers over
scikit-learn, faiss, hdbscan and MiniSom (:mod:`sslcluster.clustering.som`); each is a dataclass instantiated from
``configs/clustering/<name>.yaml``. Parameters are checked before any work, with one-line errors naming the key.

Every algorithm subclasses :class:`sslcluster.clustering.base.ClusteringAlgorithm`, which declares what the
cluster stage asks of it (``check``, ``requested_k``, ``resolved_backend``, ``fit_info``, ``artifacts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.errors import SSLClusterError

#: from this many points on ``backend: auto`` uses faiss. Measured (benchmarks/RESULTS.md): faiss faster than
#: scikit-learn on 1M x 128 with k=1000, and with one thread on 50,000 x 512 with k=100; on a machine shared with
#: other jobs faiss's default OpenMP threads can be several times slower (set ``threads: 1``).
FAISS_AUTO_MIN_POINTS = 20_000
#: ``train_size: auto``: k-means is trained on all points up to this many, on a seeded sample of this many above
#: (and every point assigned to its nearest centroid). Chosen by benchmarks/kmeans_defaults.py (RESULTS.md):
#: on planted blobs the NMI of a 100,000-point sample matched the full fit while training time stopped growing.
AUTO_TRAIN_SIZE = 100_000
#: rows per block when points are assigned to their centroids (memory: one block of float32 plus its distances).
ASSIGN_BLOCK = 65_536

KEY = "clustering.algorithm"


def _check_k(k: int | None, n: int, key: str = f"{KEY}.k") -> int:
    if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SSLClusterError(f"{key}={k!r} must be a positive integer")
    if k < 1:
        raise SSLClusterError(f"{key}={k} must be at least 1")
    if k > n:
        raise SSLClusterError(f"{key}={k} is larger than the number of samples ({n})")
    return int(k)


def _check_positive(value: Any, name: str, integer: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "positive"
        raise SSLClusterError(f"{KEY}.{name}={value!r} must be {kind}")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SSLClusterError(f"{KEY}.{name}={value!r}: use one of {', '.join(choices)}")


def check_points(x: np.ndarray) -> np.ndarray:
    """(N, D) finite float32, or a one-line error."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise SSLClusterError(f"expected a non-empty (N, D) array of points, got shape {x.shape}")
    if np.isfinite(x).all():  # the common case, a third faster than finding the rows
        return np.ascontiguousarray(x)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise SSLClusterError(f"{len(rows)} rows contain NaN or inf (first rows: {rows[:5].tolist()}); "
                              "refusing to cluster them")
    return np.ascontiguousarray(x)


def precheck(algo: ClusteringAlgorithm, n: int) -> None:
    """Validate an algorithm's parameters for ``n`` points before any work (preprocessing can take minutes):
    its own ``check()``, and the ``k`` it asks for against ``n``."""
    algo.check()
    k = algo.requested_k()
    if k is not None:
        _check_k(k, n)


def wcss(x: np.ndarray, labels: np.ndarray) -> float:
    """Within-cluster sum of squares of ``x`` (N, D) under ``labels`` (N,), noise (-1) left out."""
    keep = labels >= 0
    x, y = np.asarray(x[keep], dtype=np.float64), labels[keep]
    if len(y) == 0:
        return float("nan")
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inv, x)
    # sum ||x||^2 - sum_c ||sum_c||^2 / n_c
    return float((x ** 2).sum() - ((sums ** 2).sum(axis=1) / counts).sum())


# -- k-means ---------------------------------------------------------------------------------------------------

def faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 with the CPU-only build)."""
    import faiss

    return int(faiss.get_num_gpus())


def train_rows(n: int, train_size: int, seed: int) -> np.ndarray:
    """Positions (train_size,) of a seeded sample of ``n`` rows, in random order (exported rows are sorted by class
    and k-means++ seeding picks rows by position); all ``n`` rows, permuted, when ``train_size >= n``."""
    rng = np.random.default_rng(seed)
    if train_size >= n:
        return rng.permutation(n)
    return rng.choice(n, train_size, replace=False)


@dataclass
class KMeans(ClusteringAlgorithm):
    """Lloyd's k-means (Lloyd 1982), by scikit-learn or faiss (Johnson et al. 2019), trained on a seeded sample of
    ``train_size`` points (``auto``: all up to AUTO_TRAIN_SIZE) and every point then assigned to its nearest
    centroid in blocks (faiss), so the cluster stage can stream embeddings larger than memory. ``n_init`` restarts
    keep the best inertia on the sample. ``auto`` picks faiss from ``FAISS_AUTO_MIN_POINTS`` training points on.
    ``init``: k-means++ seeding (Arthur & Vassilvitskii 2007; for faiss computed by scikit-learn on a random
    subsample of at most ``kmeanspp_sample`` points, then passed to faiss) or random points; random seeding of faiss
    often leaves two centroids in one well-separated cluster and merges two others (see the planted-blobs test),
    so k-means++ is the default for both. ``device``: faiss on ``cpu``, on every visible ``gpu`` (needs a GPU build
    of faiss, the ``gpu`` extra), or ``auto`` (GPUs when faiss sees any).

    Defaults measured (benchmarks/RESULTS.md): max_iter=50 with k-means++ is within 1% NMI of 300 iterations on
    planted blobs (benchmarks/kmeans_defaults.py); n_init=10 because one restart, as good on planted blobs, averages
    3-4 NMI points lower on real embeddings (benchmarks/kmeans_restarts.py)."""

    k: int = 10
    backend: str = "auto"
    n_init: int = 10
    max_iter: int = 50
    tol: float = 1e-4
    init: str = "k-means++"      # k-means++ | random
    kmeanspp_sample: int = 100_000
    train_size: Any = "auto"     # auto | a positive integer <= N
    device: str = "cpu"          # cpu | gpu | auto (faiss only)
    threads: int | None = None   # faiss OpenMP threads (None: faiss's default, all cores)
    seed: int = 0
    centroids: np.ndarray | None = field(default=None, init=False, repr=False)
    inertia: float | None = field(default=None, init=False)
    n_iter: int | None = field(default=None, init=False)
    trained_on: int | None = field(default=None, init=False)
    fit_fields = ("inertia", "n_iter", "trained_on")
    streams = True
    assigns_new_points = True

    def resolved_train_size(self, n: int) -> int:
        """How many of ``n`` points k-means is trained on; a ``train_size`` above ``n`` is refused."""
        if self.train_size == "auto":
            return min(n, AUTO_TRAIN_SIZE)
        _check_positive(self.train_size, "train_size", integer=True)
        if int(self.train_size) > n:
            raise SSLClusterError(f"{KEY}.train_size={self.train_size} is larger than the number of points ({n}); "
                                  f"use auto or at most {n}")
        return int(self.train_size)

    def resolved_backend(self, n: int) -> str:
        """The backend for ``n`` points: ``backend``, or under ``auto`` faiss from FAISS_AUTO_MIN_POINTS training
        points on."""
        _check_choice(self.backend, "backend", ("auto", "sklearn", "faiss"))
        if self.backend == "auto":
            return "faiss" if min(n, self.resolved_train_size(n)) >= FAISS_AUTO_MIN_POINTS else "sklearn"
        return self.backend

    def _use_gpu(self) -> bool:
        if self.device == "cpu":
            return False
        gpus = faiss_gpus()
        if self.device == "gpu" and gpus == 0:
            raise SSLClusterError(f"{KEY}.device=gpu needs a GPU build of faiss (pip install -e '.[gpu]', "
                                  "faiss-gpu) and a visible GPU; the installed faiss has none: use device=cpu")
        return gpus > 0

    def _fit_faiss(self, x: np.ndarray, k: int) -> None:
        import faiss

        if self.threads is not None:
            _check_positive(self.threads, "threads", integer=True)
            faiss.omp_set_num_threads(int(self.threads))
        n = x.shape[0]
        gpu = self._use_gpu()
        best: tuple[float, np.ndarray] | None = None
        for r in range(int(self.n_init)):
            seed = int(self.seed) + r
            # train on every point given (faiss would subsample to 256 per centroid; the sample is train_size)
            km = faiss.Kmeans(x.shape[1], k, niter=int(self.max_iter), nredo=1, seed=seed, verbose=False,
                              max_points_per_centroid=max(256, n // k + 1), min_points_per_centroid=1, gpu=gpu)
            init = None
            if self.init == "k-means++":
                from sklearn.cluster import kmeans_plusplus

                rows = np.random.default_rng(seed).permutation(n)[:int(self.kmeanspp_sample)]
                init, _ = kmeans_plusplus(x[np.sort(rows)] if n > self.kmeanspp_sample else x, k, random_state=seed)
                init = np.ascontiguousarray(init, dtype=np.float32)
            km.train(x, init_centroids=init)
            inertia = float(km.obj[-1]) if len(km.obj) else float("inf")
            if best is None or inertia < best[0]:
                best = (inertia, km.centroids.copy())
        assert best is not None
        self.centroids = best[1]
        self.n_iter = int(self.max_iter)  # faiss always runs niter iterations

    def _fit_sklearn(self, x: np.ndarray, k: int) -> None:
        from sklearn.cluster import KMeans as SKKMeans

        km = SKKMeans(n_clusters=k, n_init=int(self.n_init), max_iter=int(self.max_iter), tol=self.tol,
                      init=self.init, random_state=self.seed)
        km.fit(x)
        self.centroids = km.cluster_centers_.astype(np.float32)
        self.n_iter = int(km.n_iter_)

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        _check_positive(self.kmeanspp_sample, "kmeanspp_sample", integer=True)
        _check_positive(self.n_init, "n_init", integer=True)
        _check_positive(self.max_iter, "max_iter", integer=True)
        _check_choice(self.init, "init", ("k-means++", "random"))
        _check_choice(self.backend, "backend", ("auto", "sklearn", "faiss"))
        _check_choice(self.device, "device", ("cpu", "gpu", "auto"))
        if self.train_size != "auto":
            _check_positive(self.train_size, "train_size", integer=True)
        if self.device == "gpu":
            self._use_gpu()

    def fit(self, x: np.ndarray) -> None:
        """Train on the sample ``x`` (T, D) float32 (already drawn: see :meth:`resolved_train_size`), leaving the
        centroids (k, D) in ``self.centroids``."""
        self.check()
        x = check_points(x)
        k = _check_k(self.k, x.shape[0])
        self.trained_on = int(x.shape[0])
        self.inertia = 0.0
        if self.resolved_backend(x.shape[0]) == "faiss":
            self._fit_faiss(x, k)
        else:
            self._fit_sklearn(x, k)

    def start_assign(self) -> None:
        """Reset the inertia summed by :meth:`assign` over the blocks of one pass."""
        self.inertia = 0.0

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """Labels (B,) int64 of the points ``block`` (B, D): nearest centroid (faiss flat L2 search); adds their
        squared distances to ``self.inertia``. ``checked``: see :meth:`ClusteringAlgorithm.assign`."""
        import faiss

        if self.centroids is None:
            raise RuntimeError("KMeans.assign before fit")
        block = np.ascontiguousarray(block, dtype=np.float32) if checked else check_points(block)
        dist, labels = faiss.knn(block, np.ascontiguousarray(self.centroids, dtype=np.float32), 1)
        self.inertia = (self.inertia or 0.0) + float(dist.astype(np.float64).sum())
        return labels[:, 0].astype(np.int64)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D): train on ``train_size`` of them, assign all -> labels (N,) int64."""
        self.check()
        n = len(x)
        rows = train_rows(n, self.resolved_train_size(n), int(self.seed))
        self.fit(x[np.sort(rows)] if len(rows) < n else x)
        self.start_assign()
        labels = np.empty(n, dtype=np.int64)
        for s in range(0, n, ASSIGN_BLOCK):
            labels[s:s + ASSIGN_BLOCK] = self.assign(x[s:s + ASSIGN_BLOCK])
        return labels


@dataclass
class MiniBatchKMeans(ClusteringAlgorithm):
    """Mini-batch k-means (Sculley 2010), scikit-learn."""

    k: int = 10
    batch_size: int = 4096
    n_init: int = 3
    max_iter: int = 100
    seed: int = 0
    inertia: float | None = field(default=None, init=False)
    fit_fields = ("inertia",)

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        _check_positive(self.batch_size, "batch_size", integer=True)
        _check_positive(self.n_init, "n_init", integer=True)
        _check_positive(self.max_iter, "max_iter", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's mini-batch k-means -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = _check_k(self.k, x.shape[0])
        from sklearn.cluster import MiniBatchKMeans as SKMB

        km = SKMB(n_clusters=k, batch_size=int(self.batch_size), n_init=int(self.n_init),
                  max_iter=int(self.max_iter), random_state=self.seed)
        labels = km.fit_predict(x).astype(np.int64)
        self.inertia = wcss(x, labels)
        return labels


# -- density based ---------------------------------------------------------------------------------------------

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
        _check_positive(self.min_cluster_size, "min_cluster_size", integer=True)
        if self.min_cluster_size < 2:
            raise SSLClusterError(f"{KEY}.min_cluster_size={self.min_cluster_size} must be at least 2")
        if self.min_samples is not None:
            _check_positive(self.min_samples, "min_samples", integer=True)
        if self.cluster_selection_epsilon < 0:
            raise SSLClusterError(f"{KEY}.cluster_selection_epsilon={self.cluster_selection_epsilon} is negative")
        _check_choice(self.cluster_selection_method, "cluster_selection_method", ("eom", "leaf"))

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
        _check_positive(self.eps, "eps")
        _check_positive(self.min_samples, "min_samples", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's DBSCAN -> labels (N,) int64, -1 for noise."""
        self.check()
        x = check_points(x)
        from sklearn.cluster import DBSCAN as SKDBSCAN

        return SKDBSCAN(eps=float(self.eps), min_samples=int(self.min_samples),
                        metric=self.metric).fit_predict(x).astype(np.int64)


# -- model based / hierarchical / graph ------------------------------------------------------------------------

@dataclass
class GaussianMixture(ClusteringAlgorithm):
    """Gaussian mixture by EM (Dempster et al. 1977), scikit-learn; hard labels = most probable component.
    ``bic`` (Schwarz 1978) is kept for k selection."""

    k: int = 10
    covariance_type: str = "full"
    n_init: int = 1
    max_iter: int = 200
    reg_covar: float = 1e-6
    init_params: str = "kmeans"
    seed: int = 0
    bic: float | None = field(default=None, init=False)
    model: Any = field(default=None, init=False, repr=False)
    fit_fields = ("bic",)
    provides_bic = True
    assigns_new_points = True

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        _check_choice(self.covariance_type, "covariance_type", ("full", "tied", "diag", "spherical"))
        _check_choice(self.init_params, "init_params", ("kmeans", "k-means++", "random", "random_from_data"))
        _check_positive(self.n_init, "n_init", integer=True)
        _check_positive(self.max_iter, "max_iter", integer=True)
        _check_positive(self.reg_covar, "reg_covar")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Fit a Gaussian mixture to points (N, D) -> most likely component per point (N,) int64."""
        self.check()
        x = check_points(x)
        k = _check_k(self.k, x.shape[0])
        from sklearn.mixture import GaussianMixture as SKGMM

        gmm = SKGMM(n_components=k, covariance_type=self.covariance_type, n_init=int(self.n_init),
                    max_iter=int(self.max_iter), reg_covar=float(self.reg_covar), init_params=self.init_params,
                    random_state=self.seed)
        labels = gmm.fit_predict(x.astype(np.float64)).astype(np.int64)
        self.bic = float(gmm.bic(x.astype(np.float64)))
        self.model = gmm
        return labels

    def fit(self, x: np.ndarray) -> None:
        """Fit the mixture on ``x`` (T, D) float32 (``clustering.fit_split``); :meth:`assign` labels other points."""
        self.fit_predict(x)

    def start_assign(self) -> None:
        """Nothing to reset: the mixture's assignment keeps no running figure."""

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """The most likely component (B,) int64 of each point of ``block`` (B, D) under the fitted mixture."""
        if self.model is None:
            raise RuntimeError("GaussianMixture.assign before fit")
        block = np.asarray(block, dtype=np.float32) if checked else check_points(block)
        return self.model.predict(block.astype(np.float64)).astype(np.int64)


LINKAGES = ("ward", "average", "complete", "single")


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
        _check_choice(self.linkage, "linkage", LINKAGES)
        if self.linkage == "ward" and self.metric != "euclidean":
            raise SSLClusterError(f"{KEY}.metric={self.metric!r}: ward linkage needs metric euclidean")
        _check_positive(self.max_points, "max_points", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Points (N, D) -> agglomerative labels (N,) int64 of ``k`` clusters; refuses above ``max_points``."""
        self.check()
        x = check_points(x)
        k = _check_k(self.k, x.shape[0])
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
        _check_positive(self.threshold, "threshold")
        _check_positive(self.branching_factor, "branching_factor", integer=True)
        if self.branching_factor < 2:
            raise SSLClusterError(f"{KEY}.branching_factor={self.branching_factor} must be at least 2")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with BIRCH (subclusters merged to ``k`` when set) -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = None if self.k is None else _check_k(self.k, x.shape[0])
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
        _check_choice(self.affinity, "affinity", ("nearest_neighbors", "rbf"))
        _check_choice(self.assign_labels, "assign_labels", ("kmeans", "discretize", "cluster_qr"))
        _check_positive(self.n_neighbors, "n_neighbors", integer=True)
        _check_positive(self.gamma, "gamma")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's spectral clustering -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = _check_k(self.k, x.shape[0])
        if self.affinity == "nearest_neighbors" and self.n_neighbors >= x.shape[0]:
            raise SSLClusterError(f"{KEY}.n_neighbors={self.n_neighbors} must be smaller than the number of "
                                  f"samples ({x.shape[0]})")
        from sklearn.cluster import SpectralClustering

        model = SpectralClustering(n_clusters=k, affinity=self.affinity, n_neighbors=int(self.n_neighbors),
                                   gamma=float(self.gamma), assign_labels=self.assign_labels,
                                   random_state=self.seed)
        return model.fit_predict(x).astype(np.int64)


# -- row order -------------------------------------------------------------------------------------------------

def row_permutation(n: int, seed: int) -> np.ndarray:
    """The seeded order (N,) in which :func:`fit_predict_shuffled` presents the rows."""
    return np.random.default_rng(seed).permutation(n)


def fit_predict_shuffled(algo: Any, x: np.ndarray, seed: int) -> np.ndarray:
    """``algo.fit_predict`` on the rows of ``x`` (N, D) in a seeded random order, labels (N,) mapped back to the
    original rows. Exported rows follow the folder order, i.e. they are sorted by class; BIRCH (its CF tree is
    built point by point), DBSCAN (a border point joins the first core point's cluster that reaches it), mini-batch
    k-means (batches in row order) and the SOM (online updates) depend on that order, and k-means++ seeding picks
    rows by position. Per-point state the algorithm keeps (the SOM's best-matching units) is mapped back too."""
    from sslcluster.clustering.som import SOM

    perm = row_permutation(len(x), seed)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    labels = np.asarray(algo.fit_predict(x[perm]), dtype=np.int64)
    if labels.shape != (len(x),):
        return labels  # the caller reports the wrong shape
    if isinstance(algo, SOM) and algo.bmu is not None:
        algo.bmu = algo.bmu[inverse]
    return labels[inverse]
