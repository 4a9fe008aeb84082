"""The k-means family: Lloyd's k-means by scikit-learn or faiss (:class:`KMeans`, trained on a seeded sample and
streaming every point to its nearest centroid), mini-batch k-means (:class:`MiniBatchKMeans`) and k-means on a Dask
cluster (:class:`DaskKMeans`, the ``distributed`` extra, imported only inside its methods so that this module
loads without it). Configs: ``configs/clustering/{kmeans,minibatch_kmeans,dask_kmeans}.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslcluster.clustering.base import ASSIGN_BLOCK, ClusteringAlgorithm, train_rows
from sslcluster.clustering.checks import KEY, check_choice, check_k, check_points, check_positive, wcss
from sslcluster.errors import SSLClusterError

#: from this many points on ``backend: auto`` uses faiss. Measured (benchmarks/RESULTS.md): faiss faster than
#: scikit-learn on 1M x 128 with k=1000, and with one thread on 50,000 x 512 with k=100; on a machine shared with
#: other jobs faiss's default OpenMP threads can be several times slower (set ``threads: 1``).
FAISS_AUTO_MIN_POINTS = 20_000
#: ``train_size: auto``: k-means is trained on all points up to this many, on a seeded sample of this many above
#: (and every point assigned to its nearest centroid). Chosen by benchmarks/kmeans_defaults.py (RESULTS.md):
#: on planted blobs the NMI of a 100,000-point sample matched the full fit while training time stopped growing.
AUTO_TRAIN_SIZE = 100_000


def faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 with the CPU-only build)."""
    import faiss

    return int(faiss.get_num_gpus())


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
        check_positive(self.train_size, "train_size", integer=True)
        if int(self.train_size) > n:
            raise SSLClusterError(f"{KEY}.train_size={self.train_size} is larger than the number of points ({n}); "
                                  f"use auto or at most {n}")
        return int(self.train_size)

    def resolved_backend(self, n: int) -> str:
        """The backend for ``n`` points: ``backend``, or under ``auto`` faiss from FAISS_AUTO_MIN_POINTS training
        points on."""
        check_choice(self.backend, "backend", ("auto", "sklearn", "faiss"))
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
            check_positive(self.threads, "threads", integer=True)
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
        check_positive(self.kmeanspp_sample, "kmeanspp_sample", integer=True)
        check_positive(self.n_init, "n_init", integer=True)
        check_positive(self.max_iter, "max_iter", integer=True)
        check_choice(self.init, "init", ("k-means++", "random"))
        check_choice(self.backend, "backend", ("auto", "sklearn", "faiss"))
        check_choice(self.device, "device", ("cpu", "gpu", "auto"))
        if self.train_size != "auto":
            check_positive(self.train_size, "train_size", integer=True)
        if self.device == "gpu":
            self._use_gpu()

    def fit(self, x: np.ndarray) -> None:
        """Train on the sample ``x`` (T, D) float32 (already drawn: see :meth:`resolved_train_size`), leaving the
        centroids (k, D) in ``self.centroids``."""
        self.check()
        x = check_points(x)
        k = check_k(self.k, x.shape[0])
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
        check_positive(self.batch_size, "batch_size", integer=True)
        check_positive(self.n_init, "n_init", integer=True)
        check_positive(self.max_iter, "max_iter", integer=True)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) with sklearn's mini-batch k-means -> labels (N,) int64."""
        self.check()
        x = check_points(x)
        k = check_k(self.k, x.shape[0])
        from sklearn.cluster import MiniBatchKMeans as SKMB

        km = SKMB(n_clusters=k, batch_size=int(self.batch_size), n_init=int(self.n_init),
                  max_iter=int(self.max_iter), random_state=self.seed)
        labels = km.fit_predict(x).astype(np.int64)
        self.inertia = wcss(x, labels)
        return labels


# -- k-means on a Dask cluster -----------------------------------------------------------------------------------

EXTRA = "pip install -e '.[distributed]' (dask, distributed, dask-ml)"


def _block(path: str, start: int, end: int, l2: bool) -> np.ndarray:
    """Rows [start, end) of the .npy file at ``path`` as float32 (B, D), L2-normalised when ``l2``; runs on a
    worker."""
    x = np.asarray(np.load(path, mmap_mode="r")[start:end], dtype=np.float32)
    if l2:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


@dataclass
class DaskKMeans(ClusteringAlgorithm):
    """dask-ml ``KMeans`` (k-means|| seeding, Bahmani et al. 2012, then Lloyd iterations) on a Dask cluster at
    ``address`` (a running scheduler, ``tcp://host:8786``; null: a local cluster of ``local_workers`` processes for
    the fit), for embeddings beyond one machine's memory. The embeddings file is read as a Dask array in blocks of
    ``chunk_rows``, each block by the worker that needs it (``np.load`` with a memory map: workers must see the same
    file system, e.g. a shared volume), L2-normalised there when the preprocessing asks for it; labels (N,) int64
    come back to the cluster stage. Needs the ``distributed`` extra (dask, distributed, dask-ml). See the README for
    when one node with faiss is enough."""

    k: int = 10
    address: str | None = None
    local_workers: int = 2           # the local cluster's worker processes (one thread each)
    connect_timeout: float = 10.0    # seconds to wait for the scheduler at ``address``
    init: str = "k-means||"          # k-means|| (dask-ml's default) | k-means++ | random
    oversampling_factor: float = 2.0  # k-means|| candidates per round, in units of k (dask-ml's default)
    max_iter: int = 50               # as the default k-means (benchmarks/kmeans_defaults.py)
    tol: float = 1e-4                # scikit-learn's and dask-ml's default
    chunk_rows: int = 262_144        # rows per Dask block (128 MiB of float32 at D=128)
    seed: int = 0
    inertia: float | None = field(default=None, init=False)
    n_iter: int | None = field(default=None, init=False)
    centroids: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_fields = ("inertia", "n_iter")
    reads_files = True

    def check(self) -> None:
        """One-line errors for bad settings, and when the distributed extra is not installed."""
        check_positive(self.local_workers, "local_workers", integer=True)
        check_positive(self.connect_timeout, "connect_timeout")
        check_positive(self.max_iter, "max_iter", integer=True)
        check_positive(self.chunk_rows, "chunk_rows", integer=True)
        if self.init not in ("k-means||", "k-means++", "random"):
            raise SSLClusterError(f"{KEY}.init={self.init!r}: use one of k-means||, k-means++, random")
        try:
            import dask_ml.cluster  # noqa: F401
            import distributed  # noqa: F401
        except ImportError as e:
            raise SSLClusterError(f"clustering=dask_kmeans needs the distributed extra ({EXTRA}); missing: "
                                  f"{e.name}") from None

    def client(self) -> tuple[Any, Any]:
        """A Dask client of the cluster at ``address`` (refused in one line when nothing answers there), or of a
        new local cluster; returns (client, local cluster or None)."""
        from distributed import Client, LocalCluster

        if self.address is None:
            # the local cluster's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 (and more) in this process's own
            # environment before spawning their workers; put it back, so later subprocesses of the user's process
            # (DDP ranks, data workers) do not inherit one-thread settings and train differently
            environ = dict(os.environ)
            try:
                cluster = LocalCluster(n_workers=int(self.local_workers), threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            finally:
                os.environ.clear()
                os.environ.update(environ)
            return Client(cluster), cluster
        try:
            return Client(self.address, timeout=float(self.connect_timeout)), None
        except (OSError, TimeoutError, ValueError) as e:
            raise SSLClusterError(f"{KEY}.address={self.address!r}: no Dask scheduler answered within "
                                  f"{self.connect_timeout:g} s ({type(e).__name__})") from None

    def fit_predict_file(self, path: Path, n: int, dim: int, l2: bool) -> np.ndarray:
        """Cluster the rows of the (N, D) ``.npy`` file at ``path`` (L2-normalised per block when ``l2``) ->
        labels (N,) int64."""
        self.check()
        k = check_k(self.k, n)
        import dask
        import dask.array as da
        from dask_ml.cluster import KMeans as DaskMLKMeans

        step = int(self.chunk_rows)
        blocks = [da.from_delayed(dask.delayed(_block)(str(path), s, min(s + step, n), l2),
                                  shape=(min(s + step, n) - s, dim), dtype=np.float32) for s in range(0, n, step)]
        x = da.concatenate(blocks, axis=0)
        client, cluster = self.client()
        try:
            km = DaskMLKMeans(n_clusters=k, init=self.init, oversampling_factor=float(self.oversampling_factor),
                              max_iter=int(self.max_iter), tol=float(self.tol), random_state=int(self.seed))
            km.fit(x)
            labels = np.asarray(dask.compute(km.labels_)[0], dtype=np.int64)  # a Dask array for Dask input
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        self.centroids = np.asarray(km.cluster_centers_, dtype=np.float32)
        self.inertia = float(km.inertia_)
        self.n_iter = int(km.n_iter_)
        return labels

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster points (N, D) already in memory (k selection, validation figures): the same fit, through a
        temporary ``.npy`` file the workers read."""
        import tempfile

        x = np.ascontiguousarray(x, dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "points.npy"
            np.save(path, x)
            return self.fit_predict_file(path, int(x.shape[0]), int(x.shape[1]), l2=False)
