"""The cluster stage's streaming parts beside a direct faiss call doing the same work, in one process and
repeated, so that the run-to-run spread of the k-means fit (the same code on the same sample in both) is seen apart
from the stage's own costs: drawing the sample from the file, and assigning every row block by block (file reads,
the preprocessing and its finite check) against a memory map handed to faiss.

    python benchmarks/streaming_parts.py --n 10000000 --repeats 2     # a 5 GB file in --dir (default /tmp)
    python benchmarks/streaming_parts.py --n 50000 --k 10 --repeats 1  # seconds
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import faiss_restarts, machine  # noqa: E402  (also puts the repository on sys.path)
from streaming_cluster import write_set  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dir", type=Path, default=Path("/tmp"))
    a = p.parse_args(argv)
    import faiss
    import torch  # noqa: F401  (imported as in the stage's process)

    from sslcluster.clustering.base import ASSIGN_BLOCK, train_rows
    from sslcluster.clustering.kmeans import KMeans
    from sslcluster.clustering.preprocess import Preprocessor, PreprocessConfig
    from sslcluster.store.embeddings import RowFile

    print(f"# streaming_parts | {machine()}", flush=True)
    tmp = Path(tempfile.mkdtemp(dir=a.dir))
    rows_out: list[dict] = []
    try:
        write_set(tmp / "e", a.n, a.dim, a.k)
        path = tmp / "e" / "embeddings.npy"
        for rep in range(a.repeats):
            row: dict = {"repeat": rep}
            t = time.perf_counter()
            rf, algo = RowFile(path), KMeans(k=a.k, seed=0)
            rows = train_rows(a.n, algo.resolved_train_size(a.n), 0)
            sample = np.asarray(rf[rows], dtype=np.float32)  # as the stage draws it
            row["stage_sample"] = time.perf_counter() - t
            pre = Preprocessor(PreprocessConfig(l2=False))
            xs = pre.fit_transform(sample)
            t = time.perf_counter()
            algo.fit(xs)
            row["stage_fit"] = time.perf_counter() - t
            t = time.perf_counter()
            algo.start_assign()
            lab = np.empty(a.n, np.int64)
            for s in range(0, a.n, ASSIGN_BLOCK):
                lab[s:s + ASSIGN_BLOCK] = algo.assign(pre.transform(rf[s:s + ASSIGN_BLOCK], offset=s), checked=True)
            row["stage_assign"] = time.perf_counter() - t
            t = time.perf_counter()
            x = np.load(path, mmap_mode="r")
            order = np.argsort(rows)
            direct_sample = np.empty((len(rows), a.dim), np.float32)
            direct_sample[order] = x[rows[order]]  # the memory map read in file order
            row["direct_sample"] = time.perf_counter() - t
            t = time.perf_counter()
            c = faiss_restarts(direct_sample, a.k, algo.max_iter, algo.n_init, algo.kmeanspp_sample, seed=0)
            row["direct_fit"] = time.perf_counter() - t
            t = time.perf_counter()
            lab2 = np.empty(a.n, np.int64)
            for s in range(0, a.n, ASSIGN_BLOCK):
                lab2[s:s + ASSIGN_BLOCK] = faiss.knn(np.ascontiguousarray(x[s:s + ASSIGN_BLOCK]), c, 1)[1][:, 0]
            row["direct_assign"] = time.perf_counter() - t
            del x
            row["labels_equal"] = bool(np.array_equal(lab, lab2))
            print("  ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
            rows_out.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows_out


if __name__ == "__main__":
    main(sys.argv[1:])
