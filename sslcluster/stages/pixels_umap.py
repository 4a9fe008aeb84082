"""The strongest cheap baseline beside raw pixels: UMAP of the raw pixels to a few dimensions (``baselines=[pixels,
pixels_umap]``). On small-image data sets UMAP of pixels followed by k-means or a Gaussian mixture clusters far
better than the pixels themselves (N2D, McConville et al. 2020, clusters a UMAP embedding; UMAP's documentation,
"Using UMAP for clustering", recommends ``min_dist=0`` for it), so a learned representation is worth its training
only where it beats this too.

The mapping is fitted without labels on (a seeded sample of) the train split's pixels and applied with
``transform`` to every row of every split, the fitted rows included, so that the kNN bank, its queries and the
clustered rows are all placed by the same function. Its embeddings are ``embeddings/pixels_umap_<split>`` and it is
clustered by the run's algorithm on these coordinates as they are (UMAP is its preprocessing: no L2, PCA or further
UMAP), and scored like every representation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslcluster.data.inspect import sample_rows
from sslcluster.errors import SSLClusterError
from sslcluster.progress import fmt_seconds, progress
from sslcluster.store.embeddings import Embeddings, read_embeddings, write_embeddings
from sslcluster.store.representations import PIXELS_UMAP, metric_prefix
from sslcluster.store.rundir import RunDir
from sslcluster.threads import torch_threads_kept

log = logging.getLogger(__name__)

#: rows mapped per ``transform`` call
BLOCK = 8192


def umap_settings(cfg: DictConfig) -> dict[str, Any]:
    """``baseline_umap`` with its defaults: dimensions, neighbours, min_dist, the rows fitted on."""
    node = cfg.get("baseline_umap")
    given = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(given, dict)
    settings = {"dim": 10, "n_neighbors": 15, "min_dist": 0.0, "fit_rows": 20000, **given}
    unknown = set(settings) - {"dim", "n_neighbors", "min_dist", "fit_rows"}
    if unknown:
        raise SSLClusterError(f"baseline_umap: unknown keys {sorted(unknown)} (dim, n_neighbors, min_dist, fit_rows)")
    for key in ("dim", "n_neighbors", "fit_rows"):
        if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < 2:
            raise SSLClusterError(f"baseline_umap.{key}={settings[key]!r} must be an integer >= 2")
    return settings


def export_pixels_umap(cfg: DictConfig, run: RunDir, pixels: dict[str, Path]) -> dict[str, Path]:
    """``embeddings/pixels_umap_<split>`` for every split of ``pixels`` (split -> the raw-pixel embeddings):
    UMAP fitted on the train split's pixels (else the first split's), every row mapped by ``transform``. Sets
    already written with the same settings and rows are kept (a rerun or resumed run does not fit again)."""
    import umap

    settings = umap_settings(cfg)
    prefix = metric_prefix(PIXELS_UMAP)
    fit_split = "train" if "train" in pixels else next(iter(pixels))
    fit_on = read_embeddings(pixels[fit_split])
    rows = sample_rows(len(fit_on.array), int(settings["fit_rows"]), int(cfg.seed))
    record = {**settings, "fit_split": fit_split, "fit_rows_used": int(len(rows)), "seed": int(cfg.seed),
              "fit_ids_sha256": fit_on.manifest.get("ids_sha256")}
    out = {s: run.embeddings_dir(prefix + s) for s in pixels}
    done = {s: Embeddings(p) for s, p in out.items()}
    if all(e.is_complete() and e.manifest().get("umap") == record for e in done.values()):
        return out
    if len(rows) <= int(settings["dim"]) + 1 or len(rows) <= int(settings["n_neighbors"]):
        raise SSLClusterError(f"baselines: pixels_umap needs more than baseline_umap.n_neighbors="
                              f"{settings['n_neighbors']} and dim+1 train rows; the {fit_split} split has {len(rows)}")
    reducer = umap.UMAP(n_components=int(settings["dim"]), n_neighbors=int(settings["n_neighbors"]),
                        min_dist=float(settings["min_dist"]), random_state=int(cfg.seed))
    start = time.monotonic()
    log.info("pixels_umap: fitting UMAP to %d-D on %d x %d %s pixels", settings["dim"], len(rows),
             fit_on.array.shape[1], fit_split)
    with torch_threads_kept():  # numba's first parallel call would reset torch's thread count
        reducer.fit(np.asarray(fit_on.array[rows], dtype=np.float32))
        log.info("pixels_umap: fitted in %s", fmt_seconds(time.monotonic() - start))
        for split, path in pixels.items():
            es = read_embeddings(path, with_labels=True)
            n = len(es.array)
            coords = np.empty((n, int(settings["dim"])), dtype=np.float32)
            bar = progress(n, f"pixels_umap {split}", unit="row")
            for lo in range(0, n, BLOCK):
                hi = min(lo + BLOCK, n)
                coords[lo:hi] = reducer.transform(np.asarray(es.array[lo:hi], dtype=np.float32))
                bar.update(hi - lo)
            bar.close()
            write_embeddings(out[split], coords, es.index, split=split, features="pixels_umap",
                             representation=PIXELS_UMAP, data=cfg.data.name, umap=record)
    log.info("pixels_umap: %s in %s", ", ".join(out), fmt_seconds(time.monotonic() - start))
    return out


def clustering_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` for clustering the UMAP coordinates: the run's algorithm and k selection, no further
    preprocessing (no L2, PCA, whitening or UMAP: the coordinates are the preprocessed features)."""
    out = cfg.copy()
    pre = out.clustering.get("preprocess")
    if pre is not None:
        for key, off in (("l2", False), ("pca_dim", None), ("whiten", False), ("umap_dim", None)):
            if key in pre:
                pre[key] = off
    return out
