"""Choosing k: sweep an algorithm over ``k_min..k_max`` and pick k by the elbow of the within-cluster sum of
squares, the best mean silhouette, or (Gaussian mixtures) the lowest BIC. Label-free: only the clustered points
are used.

- elbow: the knee of the WCSS curve by the "kneedle" rule (Satopaa et al. 2011) applied to log WCSS: scale k and
  log WCSS to [0, 1] and take the k farthest below the chord joining the curve's ends. WCSS falls by factors, and
  on the raw curve one early large drop hides a later one (planted k=5 read as 4 in the tests); on the log curve it
  does not.
- silhouette: the k with the highest mean silhouette (Rousseeuw 1987), on a fixed random sample of at most
  ``sample_size`` points when there are more.
- bic: the k with the lowest Bayesian information criterion (Schwarz 1978); Gaussian mixture only.

Every k's WCSS and silhouette are recorded whatever the method (both come from the same fits), plus BIC for GMMs,
so both curves can be drawn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sslcluster.clustering.checks import check_points, wcss
from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.errors import SSLClusterError

METHODS = ("elbow", "silhouette", "bic")
KEY = "clustering.select_k"


@dataclass
class SelectKConfig:
    method: str | None = None    # None: off
    k_min: int = 2
    k_max: int = 20
    step: int = 1
    sample_size: int = 10_000    # silhouette on at most this many points

    def ks(self) -> list[int]:
        """The candidate k values: ``k_min`` to ``k_max`` inclusive, in steps of ``step``."""
        return list(range(int(self.k_min), int(self.k_max) + 1, int(self.step)))


def elbow_k(ks: list[int], inertia: list[float]) -> int:
    """Kneedle on the decreasing log-WCSS curve: the k whose scaled log WCSS lies farthest below the chord."""
    k = np.asarray(ks, dtype=np.float64)
    w = np.log(np.maximum(np.asarray(inertia, dtype=np.float64), 1e-300))
    if len(k) < 3:
        return int(k[int(np.argmin(w))]) if len(k) else 0
    kn = (k - k[0]) / (k[-1] - k[0])
    span = w.max() - w.min()
    wn = (w - w.min()) / span if span > 0 else np.zeros_like(w)
    chord = wn[0] + (wn[-1] - wn[0]) * kn
    return int(k[int(np.argmax(chord - wn))])


def _silhouette(x: np.ndarray, labels: np.ndarray, sample_size: int, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    n_clusters = len(np.unique(labels[keep]))
    if not 2 <= n_clusters < keep.sum():
        return float("nan")
    return float(silhouette_score(x[keep], labels[keep], sample_size=min(int(keep.sum()), sample_size),
                                  random_state=seed))


def check_config(cfg: SelectKConfig, algo: ClusteringAlgorithm, n: int) -> None:
    """Refuse a bad sweep before any fit, naming the key and value."""
    if cfg.method not in METHODS:
        raise SSLClusterError(f"{KEY}.method={cfg.method!r}: use one of {', '.join(METHODS)} (or null: off)")
    for name in ("k_min", "k_max", "step", "sample_size"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise SSLClusterError(f"{KEY}.{name}={v!r} must be a positive integer")
    if cfg.method == "silhouette" and cfg.k_min < 2:
        raise SSLClusterError(f"{KEY}.k_min={cfg.k_min}: the silhouette needs k >= 2")
    if cfg.k_max <= cfg.k_min:
        raise SSLClusterError(f"{KEY}.k_max={cfg.k_max} must be larger than k_min={cfg.k_min}")
    if cfg.k_max >= n:
        raise SSLClusterError(f"{KEY}.k_max={cfg.k_max} must be smaller than the number of samples ({n})")
    if cfg.method == "elbow" and len(cfg.ks()) < 3:
        raise SSLClusterError(f"{KEY}: the elbow needs at least 3 values of k, got {cfg.ks()}")
    reason = algo.choosable_k()
    if reason is not None:
        raise SSLClusterError(f"{KEY}.method={cfg.method}: {reason}")
    if cfg.method == "bic" and not algo.provides_bic:
        raise SSLClusterError(f"{KEY}.method=bic needs a Gaussian mixture (clustering=gmm), not "
                              f"{type(algo).__name__}")


def sweep_k(algo: ClusteringAlgorithm, x: np.ndarray, cfg: SelectKConfig, seed: int = 0,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit ``algo`` with every k of ``cfg.ks()`` on ``x`` (N, D); returns ``{method, ks, wcss, silhouette,
    [bic], chosen_k}``. ``algo`` itself is left untouched (copies are fitted)."""
    x = check_points(x)
    check_config(cfg, algo, x.shape[0])
    ks = cfg.ks()
    curve: dict[str, list[float]] = {"wcss": [], "silhouette": []}
    if cfg.method == "bic":
        curve["bic"] = []
    for k in ks:
        model = dataclasses.replace(algo, k=k)  # type: ignore[type-var]  # every algorithm is a dataclass
        labels = np.asarray(model.fit_predict(x), dtype=np.int64)
        curve["wcss"].append(wcss(x, labels))
        curve["silhouette"].append(_silhouette(x, labels, cfg.sample_size, seed))
        if cfg.method == "bic":
            curve["bic"].append(float(model.bic))  # type: ignore[attr-defined]  # provides_bic
        if progress:
            progress(f"k={k}: wcss={curve['wcss'][-1]:.4g} silhouette={curve['silhouette'][-1]:.4f}")
    if cfg.method == "elbow":
        chosen = elbow_k(ks, curve["wcss"])
    elif cfg.method == "silhouette":
        s = np.asarray(curve["silhouette"])
        if np.isnan(s).all():
            raise SSLClusterError(f"{KEY}: no k in {ks[0]}..{ks[-1]} gave 2 or more clusters; cannot use the "
                                  "silhouette")
        chosen = ks[int(np.nanargmax(s))]
    else:
        chosen = ks[int(np.argmin(curve["bic"]))]
    return {"method": cfg.method, "ks": ks, **curve, "chosen_k": int(chosen)}
