"""k-means at scale, faiss and scikit-learn side by side, through sslcluster's own ``KMeans`` wrapper.

Cases (planted Gaussian blobs, labels known): 1,000,000 x 128 float32 with k=1000 and 25 iterations; 50,000 x 512
with k=10 and k=100. Both backends start from random centroids (faiss's only seeding; scikit-learn's
``init=random``) and run at most 25 Lloyd iterations, one restart, so they do the same work; scikit-learn stops
early only on strict convergence (``tol=0``). Reports fit time (seeding + iterations + final assignment) and NMI
against the planted labels.

    python benchmarks/kmeans_scale.py                        # all three cases (~minutes on 2 cores)
    python benchmarks/kmeans_scale.py --quick                # seconds: tiny sizes, as the tests run it
    python benchmarks/kmeans_scale.py --sklearn-iters 5      # scikit-learn runs 5 iterations on the 1M case,
                                                             # its 25-iteration time is extrapolated (marked)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


from _common import machine, planted_blobs  # noqa: E402  (also puts the repository on sys.path)

from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.kmeans import KMeans

FULL = [(1_000_000, 128, 1000), (50_000, 512, 10), (50_000, 512, 100)]
QUICK = [(4_000, 32, 20), (2_000, 64, 5)]


def run_case(n: int, dim: int, k: int, iters: int, backends: Sequence[str], sklearn_iters: int | None,
             seed: int = 0) -> list[dict]:
    t0 = time.perf_counter()
    x, y = planted_blobs(n, dim, k, seed=seed)
    gen = time.perf_counter() - t0
    import faiss

    default_threads = faiss.omp_get_max_threads()
    rows = []
    for backend in backends:
        threads = None
        if backend.startswith("faiss") and ":" in backend:  # faiss:1 = faiss with one OpenMP thread
            backend, threads = "faiss", int(backend.split(":")[1])
        run_iters = iters
        if backend == "sklearn" and sklearn_iters is not None and n >= 1_000_000:
            run_iters = min(iters, sklearn_iters)
        km = KMeans(k=k, backend=backend, n_init=1, max_iter=run_iters, tol=0.0, init="random", seed=seed,
                    threads=threads)
        t = time.perf_counter()
        labels = km.fit_predict(x)
        fit = time.perf_counter() - t
        label = backend if threads is None else f"faiss/{threads}t"
        row = {"n": n, "dim": dim, "k": k, "backend": label, "iters_asked": run_iters, "iters_run": km.n_iter,
               "fit_s": fit, "s_per_iter": fit / max(km.n_iter or 1, 1),
               "nmi": normalized_mutual_info_score(y, labels), "extrapolated_fit_s": None, "gen_s": gen}
        if run_iters < iters:
            row["extrapolated_fit_s"] = fit / run_iters * iters
        rows.append(row)
        print(format_row(row), flush=True)
        if threads is not None:
            faiss.omp_set_num_threads(default_threads)
    return rows


def format_row(r: dict) -> str:
    extra = (f"  (ran {r['iters_run']} of {r['iters_asked']} iters; 25-iter time EXTRAPOLATED: "
             f"{r['extrapolated_fit_s']:.1f} s)" if r["extrapolated_fit_s"] else f"  iters={r['iters_run']}")
    return (f"{r['n']:>9,} x {r['dim']:<4} k={r['k']:<5} {r['backend']:<9} fit {r['fit_s']:8.2f} s "
            f"({r['s_per_iter']:.3f} s/iter)  NMI {r['nmi']:.4f}{extra}")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds), as in the tests")
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--backends", default="faiss,sklearn",
                   help="comma-separated: faiss, sklearn, faiss:T (faiss with T OpenMP threads)")
    p.add_argument("--sklearn-iters", type=int, default=None,
                   help="on the 1M case, run scikit-learn for this many iterations and extrapolate to --iters")
    p.add_argument("--cases", default=None, help="N:D:K[,N:D:K...], replacing the default cases")
    a = p.parse_args(argv)
    cases = QUICK if a.quick else FULL
    if a.cases:
        cases = [tuple(int(v) for v in c.split(":")) for c in a.cases.split(",")]  # type: ignore[misc]
    print(f"# kmeans_scale | {machine()}", flush=True)
    rows = []
    for n, d, k in cases:
        rows += run_case(n, d, k, a.iters, a.backends.split(","), a.sklearn_iters)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
