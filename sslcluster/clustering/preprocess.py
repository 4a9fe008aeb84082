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
from sslcluster.progress import umap_fitted


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
    embeddings through it block by block; :func:`preprocess` is its fit on all rows.

    UMAP's ``transform`` of a row it was fitted on is another point than that row's fitted embedding (umap-learn
    returns the fitted embedding only for the identical input array). So, given the sample's row numbers
    (``fit_transform(sample, rows)``), :meth:`transform` gives those rows their fitted coordinates, the very ones
    a streaming algorithm was fitted on, and maps only the other rows with ``UMAP.transform`` (its out-of-sample
    extension into the fitted layout). With a sample of every row, the streamed chain then equals
    :func:`preprocess` of the same rows in the same order. PCA and L2 are the same map either way."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self.pca: Any = None
        self.umap: Any = None
        self._fitted_rows: np.ndarray | None = None   # (T,) sorted row numbers of the UMAP sample
        self._fitted_xy: np.ndarray | None = None     # (T, umap_dim) their fitted coordinates, in that order

    def fit_transform(self, sample: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Fit PCA / UMAP on ``sample`` (T, D) and return it transformed (T, D') float32. ``rows`` (T,): the sample's
        row numbers in the whole set, so that :meth:`transform` gives them these coordinates again."""
        cfg = self.cfg
        x = _finite(sample)
        cfg.check(*x.shape)
        if rows is not None and np.shape(rows) != (x.shape[0],):
            raise SSLClusterError(f"{np.shape(rows)} row numbers for a sample of {x.shape[0]} rows")
        if cfg.l2:
            x = l2_normalize(x)
        if cfg.pca_dim:
            from sklearn.decomposition import PCA

            dim = min(cfg.pca_dim, x.shape[0], x.shape[1])
            self.pca = PCA(n_components=dim, whiten=cfg.whiten, random_state=cfg.seed)
            x = self.pca.fit_transform(x).astype(np.float32)
        if cfg.umap_dim:
            self.umap, x = umap_fitted(x, "clustering preprocess", n_components=cfg.umap_dim,
                                       n_neighbors=min(cfg.umap_neighbors, x.shape[0] - 1),
                                       min_dist=cfg.umap_min_dist, random_state=cfg.seed)
            x = np.ascontiguousarray(x, dtype=np.float32)
            if rows is not None:
                order = np.argsort(rows, kind="stable")
                self._fitted_rows, self._fitted_xy = np.asarray(rows)[order], x[order]
        return np.ascontiguousarray(x)

    def transform(self, block: np.ndarray, offset: int = 0) -> np.ndarray:
        """A block of rows (B, D), its first row being row ``offset`` of the whole set -> (B, D') float32. Rows of
        the UMAP sample get their fitted coordinates (see the class)."""
        x = _finite(block, offset)
        if self.cfg.l2:
            x = l2_normalize(x)
        if self.pca is not None:
            x = self.pca.transform(x).astype(np.float32)
        if self.umap is not None:
            x = self._umap_transform(x, offset)
        return np.ascontiguousarray(x)

    def _umap_transform(self, x: np.ndarray, offset: int) -> np.ndarray:
        """UMAP coordinates (B, umap_dim) of rows ``offset .. offset + B - 1`` whose PCA output is ``x`` (B, D)."""
        fitted, xy = self._fitted_rows, self._fitted_xy
        if fitted is None or xy is None:
            return self.umap.transform(x).astype(np.float32)  # numba's pool already started in fit_transform
        ids = np.arange(offset, offset + len(x))
        pos = np.minimum(np.searchsorted(fitted, ids), len(fitted) - 1)
        hit = fitted[pos] == ids
        out = np.empty((len(x), xy.shape[1]), dtype=np.float32)
        out[hit] = xy[pos[hit]]
        if not hit.all():
            out[~hit] = self.umap.transform(x[~hit]).astype(np.float32)
        return out


def preprocess(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N, D) float -> (N, D') float32, after refusing non-finite rows: the :class:`Preprocessor` fitted on all
    rows."""
    return Preprocessor(cfg).fit_transform(x)
