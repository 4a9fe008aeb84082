"""HDBSCAN at scale: 100,000 planted-blob points in 128 dimensions, L2 -> UMAP to 10 dimensions -> HDBSCAN,
through sslcluster's own preprocessing chain and ``HDBSCAN`` wrapper. Reports the UMAP and HDBSCAN times, the
clusters found, the noise fraction and NMI against the planted labels (noise counted as one more cluster, and on
the non-noise points only).

    python benchmarks/hdbscan_scale.py            # 100,000 x 128, 20 planted clusters
    python benchmarks/hdbscan_scale.py --min-samples 10   # density from 10 neighbours instead of 1,250
    python benchmarks/hdbscan_scale.py --quick    # 2,000 points
    python benchmarks/hdbscan_scale.py --quick --umap-dim 0   # as the tests run it (UMAP compiles for a minute)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from _common import machine, planted_blobs  # noqa: E402

from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.density import HDBSCAN
from sslcluster.clustering.preprocess import PreprocessConfig, preprocess


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--umap-dim", type=int, default=10, help="0: no UMAP (HDBSCAN on the L2-normalised points)")
    p.add_argument("--min-cluster-size", type=int, default=None, help="default: n / (4 k)")
    p.add_argument("--min-samples", type=int, default=None,
                   help="HDBSCAN min_samples (default: hdbscan's, = min_cluster_size)")
    a = p.parse_args(argv)
    n, dim, k = (2_000, 32, 5) if a.quick else (a.n, a.dim, a.k)
    mcs = a.min_cluster_size or max(5, n // (4 * k))
    print(f"# hdbscan_scale | {machine()}", flush=True)
    x, y = planted_blobs(n, dim, k, seed=0)
    t0 = time.perf_counter()
    z = preprocess(x, PreprocessConfig(l2=True, umap_dim=a.umap_dim or None, seed=0))
    t1 = time.perf_counter()
    labels = HDBSCAN(min_cluster_size=mcs, min_samples=a.min_samples, core_dist_n_jobs=2).fit_predict(z)
    t2 = time.perf_counter()
    keep = labels >= 0
    row = {"n": n, "dim": dim, "k_planted": k, "umap_dim": a.umap_dim, "min_cluster_size": mcs,
           "min_samples": a.min_samples,
           "umap_s": t1 - t0, "hdbscan_s": t2 - t1, "n_clusters": int(len(np.unique(labels[keep]))),
           "noise_fraction": float(1 - keep.mean()), "nmi": normalized_mutual_info_score(y, labels),
           "nmi_non_noise": normalized_mutual_info_score(y[keep], labels[keep]) if keep.any() else float("nan")}
    print(f"{n:,} x {dim} -> UMAP {a.umap_dim}-d {row['umap_s']:.1f} s | HDBSCAN(min_cluster_size={mcs}) "
          f"{row['hdbscan_s']:.1f} s (min_samples={a.min_samples or mcs}) | {row['n_clusters']} clusters "
          f"(planted {k}), noise {row['noise_fraction']:.3f} | NMI {row['nmi']:.4f} (non-noise {row['nmi_non_noise']:.4f})", flush=True)
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
