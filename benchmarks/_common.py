"""Shared helpers of the benchmark scripts: planted Gaussian blobs, a timer, the machine's state."""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def planted_blobs(n: int, dim: int, k: int, spread: float = 1.0, noise: float = 1.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (n, dim) float32 around ``k`` centres drawn from N(0, spread^2 I), isotropic noise of std
    ``noise``; returns the points and the planted labels (n,) int64. Cluster sizes are equal up to one."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim), dtype=np.float32) * spread
    labels = rng.permutation(np.arange(n, dtype=np.int64) % k)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= noise
    for s in range(0, n, 1 << 18):  # in place, in chunks, to keep memory at one copy of x
        x[s:s + (1 << 18)] += centres[labels[s:s + (1 << 18)]]
    return x, labels


@contextmanager
def timer(out: dict, key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()} | {os.cpu_count()} CPUs | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"| python {platform.python_version()}")


def faiss_restarts(sample: np.ndarray, k: int, iters: int, n_init: int, pp_sample: int, seed: int = 0) -> np.ndarray:
    """Centroids (k, D) of a direct faiss k-means on ``sample`` (T, D) float32 doing the project's default work:
    ``n_init`` restarts with seeds ``seed``, ``seed + 1``, ..., each seeded by scikit-learn's k-means++ on at most
    ``pp_sample`` rows, ``iters`` iterations on every row, the lowest inertia kept. The benchmarks' reference for
    the cluster stage at equal settings."""
    import faiss
    from sklearn.cluster import kmeans_plusplus

    best: tuple[float, np.ndarray] | None = None
    for r in range(n_init):
        pp = np.sort(np.random.default_rng(seed + r).permutation(len(sample))[:pp_sample])
        init, _ = kmeans_plusplus(sample[pp] if len(sample) > pp_sample else sample, k, random_state=seed + r)
        km = faiss.Kmeans(sample.shape[1], k, niter=iters, nredo=1, seed=seed + r, min_points_per_centroid=1,
                          max_points_per_centroid=max(256, len(sample) // k + 1))
        km.train(sample, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        if best is None or km.obj[-1] < best[0]:
            best = (float(km.obj[-1]), km.centroids.copy())
    assert best is not None
    return best[1]
