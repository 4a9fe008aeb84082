"""Self-organising map at scale: 50,000 x 128 planted-blob points (10 clusters) on a 10 x 10 grid, through
sslcluster's ``SOM`` (MiniSom training), PCA initialisation, one pass of single-sample updates per --iterations.
Reports the fit time (training + best-matching units + node clustering) and NMI against the planted labels, for
node weights clustered by k-means into 10 and for node-as-cluster.

    python benchmarks/som_scale.py                 # 50,000 x 128, 10 x 10, 50,000 iterations
    python benchmarks/som_scale.py --quick         # 2,000 x 16 on 5 x 5, as the tests run it
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from _common import machine, planted_blobs  # noqa: E402

from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.som import SOM


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--grid", type=int, default=10)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--iterations", type=int, default=None, help="default: n (one pass)")
    a = p.parse_args(argv)
    n, dim, grid, k = (2_000, 16, 5, 4) if a.quick else (a.n, a.dim, a.grid, a.k)
    iters = a.iterations or n
    print(f"# som_scale | {machine()}", flush=True)
    x, y = planted_blobs(n, dim, k, seed=0)
    rows = []
    for mode in ("kmeans", "node"):
        som = SOM(grid=[grid, grid], sigma=1.5, learning_rate=0.5, iterations=iters, init="pca", mode=mode,
                  k=k if mode != "node" else None, seed=0)
        t = time.perf_counter()
        labels = som.fit_predict(x)
        fit = time.perf_counter() - t
        row = {"n": n, "dim": dim, "grid": grid, "iterations": iters, "mode": mode, "fit_s": fit,
               "nmi": normalized_mutual_info_score(y, labels), "quantization_error": som.quantization_error}
        rows.append(row)
        print(f"{n:,} x {dim} on {grid}x{grid}, {iters:,} iterations, mode={mode}: fit {fit:.2f} s, NMI "
              f"{row['nmi']:.4f}, quantization error {som.quantization_error:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
