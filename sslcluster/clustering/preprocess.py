"""Preprocessing chain applied before clustering, in a fixed order: L2 -> PCA (optionally whitened) -> UMAP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslcluster.errors import SSLClusterError


@dataclass
class PreprocessConfig:
    l2: bool = True
    pca_dim: int | None = None
    whiten: bool = False
    umap_dim: int | None = None
    umap_neighbors: int = 15
    umap_min_dist: float = 0.0
    seed: int = 0

    def describe(self) -> list[str]:
        chain = ["l2"] if self.l2 else []
        if self.pca_dim:
            chain.append(f"pca{self.pca_dim}{'-whiten' if self.whiten else ''}")
        if self.umap_dim:
            chain.append(f"umap{self.umap_dim}")
        return chain


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def preprocess(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N, D) float -> (N, D') float32, after refusing non-finite rows."""
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise SSLClusterError(f"{len(rows)} embedding rows contain NaN or inf (first rows: {rows[:5].tolist()}); "
                              "refusing to cluster them")
    if cfg.l2:
        x = l2_normalize(x)
    if cfg.pca_dim:
        from sklearn.decomposition import PCA

        dim = min(cfg.pca_dim, x.shape[0], x.shape[1])
        x = PCA(n_components=dim, whiten=cfg.whiten, random_state=cfg.seed).fit_transform(x).astype(np.float32)
    if cfg.umap_dim:
        import umap

        x = umap.UMAP(n_components=cfg.umap_dim, n_neighbors=cfg.umap_neighbors, min_dist=cfg.umap_min_dist,
                      random_state=cfg.seed).fit_transform(x).astype(np.float32)
    return np.ascontiguousarray(x)
