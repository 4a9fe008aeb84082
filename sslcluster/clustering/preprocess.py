"""Preprocessing chain applied before clustering, in a fixed order: L2 -> PCA (optionally whitened) -> UMAP.

L2 normalisation puts the rows on the unit sphere, where Euclidean distance is a monotone function of the cosine
similarity SSL losses train; PCA (optionally whitened) removes noise dimensions; UMAP (McInnes et al. 2018) to a few
dimensions makes density-based clustering (HDBSCAN) work on high-dimensional features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.progress import umap_fit_transform
from sslcluster.threads import torch_threads_kept


@dataclass
class PreprocessConfig:
    l2: bool = True
    pca_dim: int | None = None
    whiten: bool = False
    umap_dim: int | None = None
    umap_neighbors: int = 15
    umap_min_dist: float = 0.0
    seed: int = 0

    def check(self, n: int, d: int) -> None:
        """Refuse bad settings for ``n`` points of ``d`` dimensions, naming the key."""
        for name in ("pca_dim", "umap_dim"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SSLClusterError(f"clustering.preprocess.{name}={v!r} must be a positive integer or null")
        if self.umap_dim:
            if isinstance(self.umap_neighbors, bool) or not isinstance(self.umap_neighbors, int) \
                    or self.umap_neighbors < 2:
                raise SSLClusterError(f"clustering.preprocess.umap_neighbors={self.umap_neighbors!r} must be an "
                                      "integer >= 2")
            if n <= self.umap_dim + 1 or n <= 2:
                raise SSLClusterError(f"clustering.preprocess.umap_dim={self.umap_dim}: UMAP needs more than "
                                      f"umap_dim + 1 points, got {n}")
        if self.whiten and not self.pca_dim:
            raise SSLClusterError("clustering.preprocess.whiten=true needs clustering.preprocess.pca_dim")

    def describe(self) -> list[str]:
        """The preprocessing chain as short names in order, e.g. ``['l2', 'pca50-whiten', 'umap10']``."""
        chain = ["l2"] if self.l2 else []
        if self.pca_dim:
            chain.append(f"pca{self.pca_dim}{'-whiten' if self.whiten else ''}")
        if self.umap_dim:
            chain.append(f"umap{self.umap_dim}")
        return chain


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _finite(x: np.ndarray, offset: int = 0) -> np.ndarray:
    """``x`` (N, D) as float32 after refusing non-finite rows (named by position + ``offset``)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise SSLClusterError(f"expected a non-empty (N, D) array of embeddings, got shape {x.shape}")
    if np.isfinite(x).all():  # the common case, a third faster than finding the rows
        return x
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad) + offset
        raise SSLClusterError(f"{len(rows)} embedding rows contain NaN or inf (first rows: {rows[:5].tolist()}); "
                              "refusing to cluster them")
    return x


class Preprocessor:
    """The chain fitted on a sample and applied to any block of rows: L2 (per row), then the PCA and UMAP fitted
    on the sample (scikit-learn's ``PCA.transform``, umap-learn's ``UMAP.transform``). The cluster stage streams
    embeddings through it block by block."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self.pca: Any = None
        self.umap: Any = None

    def fit_transform(self, sample: np.ndarray) -> np.ndarray:
        """Fit PCA / UMAP on ``sample`` (T, D) and return it transformed (T, D') float32."""
        cfg = self.cfg
        x = _finite(sample)
        cfg.check(*x.shape)
        if cfg.l2:
            x = l2_normalize(x)
        if cfg.pca_dim:
            from sklearn.decomposition import PCA

            dim = min(cfg.pca_dim, x.shape[0], x.shape[1])
            self.pca = PCA(n_components=dim, whiten=cfg.whiten, random_state=cfg.seed)
            x = self.pca.fit_transform(x).astype(np.float32)
        if cfg.umap_dim:
            import umap

            self.umap = umap.UMAP(n_components=cfg.umap_dim, n_neighbors=min(cfg.umap_neighbors, x.shape[0] - 1),
                                  min_dist=cfg.umap_min_dist, random_state=cfg.seed)
            with torch_threads_kept():  # numba's first parallel call would reset torch's thread count
                x = self.umap.fit_transform(x).astype(np.float32)
        return np.ascontiguousarray(x)

    def transform(self, block: np.ndarray, offset: int = 0) -> np.ndarray:
        """A block of rows (B, D) (``offset``: its first row's position, for error messages) -> (B, D') float32."""
        x = _finite(block, offset)
        if self.cfg.l2:
            x = l2_normalize(x)
        if self.pca is not None:
            x = self.pca.transform(x).astype(np.float32)
        if self.umap is not None:
            x = self.umap.transform(x).astype(np.float32)  # numba's pool already started in fit_transform
        return np.ascontiguousarray(x)


def preprocess(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N, D) float -> (N, D') float32, after refusing non-finite rows."""
    x = _finite(x)
    cfg.check(*x.shape)
    if cfg.l2:
        x = l2_normalize(x)
    if cfg.pca_dim:
        from sklearn.decomposition import PCA

        dim = min(cfg.pca_dim, x.shape[0], x.shape[1])
        x = PCA(n_components=dim, whiten=cfg.whiten, random_state=cfg.seed).fit_transform(x).astype(np.float32)
    if cfg.umap_dim:
        x = umap_fit_transform(x, "clustering preprocess", n_components=cfg.umap_dim,
                               n_neighbors=min(cfg.umap_neighbors, x.shape[0] - 1), min_dist=cfg.umap_min_dist,
                               random_state=cfg.seed).astype(np.float32)
    return np.ascontiguousarray(x)
