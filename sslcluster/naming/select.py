"""Which images represent a cluster: the members nearest its centroid, plus random members.

The centroid is taken in the embeddings space (the rows of ``embeddings.npy``), L2-normalised first when the
clustering was (``"l2"`` in its record's ``preprocess`` chain), so "nearest" means what it meant to the clustering
before any PCA / UMAP. Random picks are seeded per cluster, so the same clustering always shows the same images
(and a rerun hits the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.clustering.preprocess import l2_normalize
from sslcluster.errors import SSLClusterError


@dataclass(frozen=True)
class Pick:
    """One image chosen for a cluster: its row in ``index.csv`` / ``embeddings.npy`` and why it was chosen."""

    row: int
    how: str  # "nearest" | "random"


def select_images(array: np.ndarray, labels: np.ndarray, cluster: int, count: int, nearest: int, seed: int,
                  l2: bool) -> list[Pick]:
    """Up to ``count`` rows of ``cluster``: the ``nearest`` closest to its centroid, then random other members.

    ``array`` is the (N, D) embeddings (a memory map is fine: only the cluster's rows are read), ``labels`` the
    clustering's (N,) labels. A cluster smaller than ``count`` gives all its members.
    """
    if count < 1:
        raise SSLClusterError(f"naming.images.count must be at least 1, got {count}")
    if not 0 <= nearest <= count:
        raise SSLClusterError(f"naming.images.nearest must be between 0 and naming.images.count ({count}), "
                              f"got {nearest}")
    rows = np.flatnonzero(labels == cluster)
    if rows.size == 0:
        raise SSLClusterError(f"cluster {cluster} has no members")
    x = np.asarray(array[rows], dtype=np.float32)
    if l2:
        x = l2_normalize(x)
    centroid = x.mean(axis=0)
    order = np.argsort(((x - centroid) ** 2).sum(axis=1), kind="stable")
    n_near = min(nearest, rows.size)
    near = rows[order[:n_near]]
    rest = rows[order[n_near:]]
    n_rand = min(count - n_near, rest.size)
    rng = np.random.default_rng([abs(int(seed)), int(cluster) + 1])
    rand = np.sort(rng.choice(rest, size=n_rand, replace=False)) if n_rand else np.empty(0, dtype=np.int64)
    return [Pick(int(r), "nearest") for r in near] + [Pick(int(r), "random") for r in rand]
