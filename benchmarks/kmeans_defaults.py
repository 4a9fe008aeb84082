"""k-means defaults, measured: sslcluster's default ``KMeans`` (through the cluster stage and alone) against direct
scikit-learn and faiss calls on the same planted blobs, in one run. Figures: wall time and NMI against the planted
labels; the project's overhead at equal settings is its time over the direct faiss call doing the same work
(a seeded sample of ``train_size`` rows, ``n_init`` restarts with k-means++ seeds, ``max_iter`` iterations, every
point assigned).

    python benchmarks/kmeans_defaults.py                       # 200,000 x 64, k=50 (a minute or two)
    python benchmarks/kmeans_defaults.py --n 20000 --k 10      # seconds (as the tests run it)
    python benchmarks/kmeans_defaults.py --slow                # also scikit-learn with ten restarts
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from _common import faiss_restarts, machine, planted_blobs  # noqa: E402  (also puts the repository on sys.path)

from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.kmeans import AUTO_TRAIN_SIZE, KMeans
from sslcluster.config import compose
from sslcluster.pipeline import stage_cluster  # imported here: its import time is not the stage's
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.io import read_json


def direct_sklearn(x: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans as SK

    return SK(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def direct_faiss_default(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """faiss as its README calls it: 25 iterations, random seeds, its own 256-points-per-centroid sample."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0]


def direct_faiss_equal(x: np.ndarray, k: int, seed: int, train_size: int, iters: int, n_init: int,
                       pp_sample: int) -> np.ndarray:
    """faiss doing the project's default work: the same seeded sample, ``n_init`` restarts each seeded by k-means++
    (scikit-learn, on at most ``pp_sample`` rows) with the same seeds, ``iters`` iterations, the lowest inertia
    kept, every point assigned."""
    import faiss

    rows = np.random.default_rng(seed).choice(len(x), train_size, replace=False) \
        if train_size < len(x) else np.random.default_rng(seed).permutation(len(x))
    centroids = faiss_restarts(np.ascontiguousarray(x[rows]), k, iters, n_init, pp_sample, seed)
    return faiss.knn(np.ascontiguousarray(x), centroids, 1)[1][:, 0]


def project_stage(x: np.ndarray, k: int, workdir: Path, extra: Sequence[str] = ()) -> tuple[np.ndarray, dict]:
    """The cluster stage on an embeddings folder of ``x`` (no L2, as the direct calls), default k-means."""

    root = workdir / "runs"
    cfg = compose([f"run.root={root}", "run.key=bench", "logger=none", f"clustering.algorithm.k={k}",
                   "clustering.preprocess.l2=false", "clustering.overwrite=true", *extra])
    stage_cluster(cfg)
    out = root / "bench" / "clusters" / "kmeans-test"
    return np.load(out / "labels.npy"), read_json(out / "record.json")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--slow", action="store_true", help="also scikit-learn with n_init=10")
    a = p.parse_args(argv)
    print(f"# kmeans_defaults | {machine()}", flush=True)
    x, y = planted_blobs(a.n, a.dim, a.k, seed=0)
    d = KMeans(k=a.k)
    ts = d.resolved_train_size(a.n)
    print(f"{a.n:,} x {a.dim}, k={a.k}; project default: backend {d.resolved_backend(a.n)}, n_init {d.n_init}, "
          f"max_iter {d.max_iter}, train_size {ts:,} (auto: up to {AUTO_TRAIN_SIZE:,}), init {d.init}", flush=True)
    rows: list[dict] = []

    def report(name: str, labels: np.ndarray, seconds: float) -> None:
        nmi = normalized_mutual_info_score(y, labels)
        rows.append({"name": name, "seconds": seconds, "nmi": nmi})
        print(f"{name:<58} {seconds:8.2f} s  NMI {nmi:.4f}", flush=True)

    lab, s = timed(lambda: direct_sklearn(x, a.k, 1, 0))
    report("direct sklearn KMeans (k-means++, n_init=1)", lab, s)
    if a.slow:
        lab, s = timed(lambda: direct_sklearn(x, a.k, 10, 0))
        report("direct sklearn KMeans (k-means++, n_init=10)", lab, s)
    lab, s = timed(lambda: direct_faiss_default(x, a.k, 0))
    report("direct faiss Kmeans (25 iters, random init, own sample)", lab, s)
    lab, s = timed(lambda: direct_faiss_equal(x, a.k, 0, ts, d.max_iter, d.n_init, d.kmeanspp_sample))
    equal = s
    report(f"direct faiss at the project's settings ({ts:,} sample, {d.n_init} km++ restarts, {d.max_iter} it)",
           lab, s)
    km = KMeans(k=a.k)
    lab, s = timed(lambda: km.fit_predict(x))
    report("sslcluster KMeans().fit_predict (default)", lab, s)
    with tempfile.TemporaryDirectory() as tmp:
        emb = Path(tmp) / "runs" / "bench" / "embeddings" / "test"  # written before the timing
        write_embeddings(emb, x, EmbeddingIndex([str(i) for i in range(len(x))], [""] * len(x)), features="backbone")
        (lab, rec), s = timed(lambda: project_stage(x, a.k, Path(tmp)))
        report("sslcluster cluster stage (default k-means, l2 off)", lab, s)
        t = rec["times_s"]
        print(f"  stage parts: preprocess+sample {t['preprocess']:.2f} s, fit+assign {t['fit']:.2f} s, "
              f"internal metrics {t['quality']:.2f} s", flush=True)
        stage_fit = t["preprocess"] + t["fit"]
    print(f"overhead at equal settings: KMeans.fit_predict {100 * (rows[-2]['seconds'] / equal - 1):+.0f}%, "
          f"cluster stage sample+fit+assign {100 * (stage_fit / equal - 1):+.0f}%, whole stage "
          f"{100 * (rows[-1]['seconds'] / equal - 1):+.0f}%", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
