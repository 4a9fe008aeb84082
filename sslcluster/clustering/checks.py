"""The checks every clustering algorithm module shares: parameters and points validated with one-line errors that
name the key (``clustering.algorithm.<name>``), the check of an algorithm's settings before any work
(:func:`precheck`), the choices several algorithms accept (:data:`LINKAGES`) and the within-cluster sum of squares
(:func:`wcss`, k selection's elbow and mini-batch k-means's inertia).

Algorithm modules (``kmeans``, ``density``, ``mixture``, ``hierarchical``, ``spectral``, ``som``, ``heads``) import
these; this module imports no algorithm module (``tests/clustering/test_layout.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.errors import SSLClusterError

#: the config key under which an algorithm's parameters live; error messages name ``KEY.<parameter>``.
KEY = "clustering.algorithm"
#: agglomerative linkages (scikit-learn's), for agglomerative clustering and a SOM's node clustering.
LINKAGES = ("ward", "average", "complete", "single")


def check_k(k: int | None, n: int, key: str = f"{KEY}.k") -> int:
    """``k`` as an int when it is a positive integer no larger than the number of points ``n``; else a one-line
    error naming ``key``."""
    if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SSLClusterError(f"{key}={k!r} must be a positive integer")
    if k < 1:
        raise SSLClusterError(f"{key}={k} must be at least 1")
    if k > n:
        raise SSLClusterError(f"{key}={k} is larger than the number of samples ({n})")
    return int(k)


def check_positive(value: Any, name: str, integer: bool = False) -> None:
    """A one-line error naming ``clustering.algorithm.<name>`` unless ``value`` is a positive number (a positive
    whole number when ``integer``; booleans refused)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "positive"
        raise SSLClusterError(f"{KEY}.{name}={value!r} must be {kind}")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    """A one-line error naming ``clustering.algorithm.<name>`` and the choices unless ``value`` is one of them."""
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
        check_k(k, n)


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
