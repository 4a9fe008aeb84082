"""k-means on a Dask cluster (dask-ml's ``KMeans``: k-means|| seeding, Bahmani et al. 2012, then Lloyd
iterations), for embeddings beyond one machine's memory: the embeddings file is read as a Dask array, each block by
the worker that needs it (``np.load`` with a memory map: workers must see the same file system, e.g. a shared
volume), L2-normalised there when the preprocessing asks for it. Labels (N,) int64 come back to the cluster stage.

``address`` is a running scheduler (``tcp://host:8786``); null starts a local cluster of ``local_workers`` worker
processes for the fit. Needs the ``distributed`` extra (dask, distributed, dask-ml). See the README for when one
node with faiss is enough.
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslcluster.clustering.algorithms import KEY, _check_k, _check_positive
from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.errors import SSLClusterError

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
    """dask-ml ``KMeans`` (k-means||) on a Dask cluster at ``address`` (null: a local cluster of
    ``local_workers`` processes), reading the embeddings file in blocks of ``chunk_rows``."""

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
        _check_positive(self.local_workers, "local_workers", integer=True)
        _check_positive(self.connect_timeout, "connect_timeout")
        _check_positive(self.max_iter, "max_iter", integer=True)
        _check_positive(self.chunk_rows, "chunk_rows", integer=True)
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
        k = _check_k(self.k, n)
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
