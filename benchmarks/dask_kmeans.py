"""The distributed k-means engine (dask-ml k-means|| on a local Dask cluster of 2 worker processes, reading the
.npy file in blocks) against faiss and sslcluster's default k-means on the same planted blobs, in one run: wall
time (the local cluster's start included) and NMI against the planted labels.

    python benchmarks/dask_kmeans.py                         # 500,000 x 64, k=50
    python benchmarks/dask_kmeans.py --n 20000 --k 10        # seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import machine, planted_blobs  # noqa: E402  (also puts the repository on sys.path)

from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.kmeans import DaskKMeans, KMeans


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    print(f"# dask_kmeans | {machine()}", flush=True)
    x, y = planted_blobs(a.n, a.dim, a.k, seed=0)
    print(f"{a.n:,} x {a.dim}, k={a.k}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)
        import faiss

        t = time.perf_counter()
        km = faiss.Kmeans(a.dim, a.k, niter=25, seed=0)
        km.train(x)
        labels = km.index.search(x, 1)[1][:, 0]
        print(f"direct faiss Kmeans (25 iters, its own sample)      {time.perf_counter() - t:8.1f} s  "
              f"NMI {normalized_mutual_info_score(y, labels):.4f}", flush=True)
        t = time.perf_counter()
        labels = KMeans(k=a.k).fit_predict(x)
        print(f"sslcluster KMeans (default: sample, faiss, km++)    {time.perf_counter() - t:8.1f} s  "
              f"NMI {normalized_mutual_info_score(y, labels):.4f}", flush=True)
        t = time.perf_counter()
        dk = DaskKMeans(k=a.k, local_workers=a.workers, chunk_rows=max(1, a.n // 8))
        labels = dk.fit_predict_file(path, a.n, a.dim, l2=False)
        print(f"dask-ml KMeans, k-means||, local {a.workers} workers        {time.perf_counter() - t:8.1f} s  "
              f"NMI {normalized_mutual_info_score(y, labels):.4f}  ({dk.n_iter} iterations)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
