"""Streaming clustering at scale: the cluster stage (default k-means: a seeded sample, then every row assigned in
blocks read from the file) on N x D planted blobs written to disk as an embeddings set, beside a direct faiss call
doing the same work (the same sample, the same k-means++ restarts and iterations, assignment in blocks of a memory map),
each in its own process: wall time, peak resident memory above a bare ``import sslcluster, torch`` (measured in a
third process), NMI against the planted labels. The data file is deleted at the end.

    python benchmarks/streaming_cluster.py                                 # 2,000,000 x 128, k=100 (a 1 GB file)
    python benchmarks/streaming_cluster.py --n 10000000                    # 10,000,000 x 128 (5 GB; check df first)
    python benchmarks/streaming_cluster.py --n 50000 --k 10                # seconds
    python benchmarks/streaming_cluster.py --repeats 5                     # 5 alternating pairs, medians
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import ROOT, machine  # noqa: E402  (also puts the repository on sys.path)

# VmHWM: this process's peak resident memory (getrusage's ru_maxrss would carry over the parent's peak across fork)
PEAK = ("peak = lambda: int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024"
        "  # MiB\n")

BARE = PEAK + "import sslcluster, torch\nprint(json.dumps({'peak_mib': peak()}))\n"

PROJECT = PEAK + textwrap.dedent("""
    import sslcluster, torch, sys, time
    from sslcluster.config import compose
    from sslcluster.pipeline import stage_cluster
    root, k = sys.argv[1], sys.argv[2]
    t = time.perf_counter()
    stage_cluster(compose([f"run.root={root}", "run.key=bench", "logger=none", f"clustering.algorithm.k={k}",
                           "clustering.preprocess.l2=false", "clustering.overwrite=true"]))
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak()}))
""")

DIRECT = PEAK + textwrap.dedent("""
    import sys, time
    import numpy as np, faiss
    from _common import faiss_restarts
    path, k, train_size, iters, block, n_init, pp_sample, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
    t = time.perf_counter()
    x = np.load(path, mmap_mode="r")
    n = len(x)
    rows = np.random.default_rng(0).choice(n, train_size, replace=False)   # the stage's sample (seed 0) ...
    order = np.argsort(rows)
    sample = np.empty((train_size, x.shape[1]), dtype=np.float32)
    sample[order] = x[rows[order]]                                          # ... read in file order
    centroids = faiss_restarts(sample, k, iters, n_init, pp_sample, seed=0)   # the stage's restarts
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, block):
        labels[s:s + block] = faiss.knn(np.ascontiguousarray(x[s:s + block]), centroids, 1)[1][:, 0]
    np.save(out, labels)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak()}))
""")


def write_set(folder: Path, n: int, dim: int, k: int, seed: int = 0) -> np.ndarray:
    """An embeddings set of planted blobs (centres N(0, 4^2 I), unit noise), written in chunks; the labels (N,)."""
    from sslcluster.store.embeddings import ARRAY, INDEX, MANIFEST, ids_digest
    from sslcluster.store.io import write_json

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32) * 4
    labels = rng.permutation(np.arange(n, dtype=np.int64) % k)
    folder.mkdir(parents=True)
    arr = np.lib.format.open_memmap(folder / ARRAY, mode="w+", dtype=np.float32, shape=(n, dim))
    step = 1 << 18
    for s in range(0, n, step):
        e = min(s + step, n)
        arr[s:e] = centres[labels[s:e]] + rng.standard_normal((e - s, dim), dtype=np.float32)
    arr.flush()
    del arr
    ids = [str(i) for i in range(n)]
    with open(folder / INDEX, "w") as f:
        f.write("id,path,label\n")
        f.writelines(f"{i},,\n" for i in ids)
    write_json(folder / MANIFEST, {"count": n, "dim": dim, "dtype": "float32", "ids_sha256": ids_digest(ids),
                                   "classes": None, "features": "backbone", "status": "complete"})
    return labels


def child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", "import json\n" + code, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--dir", type=Path, default=None, help="where the data file goes (default: a temporary folder)")
    p.add_argument("--repeats", type=int, default=1, help="stage and direct runs, alternating (the fit's time "
                   "varies by up to a third between processes here: compare medians)")
    a = p.parse_args(argv)
    from sklearn.metrics import normalized_mutual_info_score

    from sslcluster.clustering.base import ASSIGN_BLOCK
    from sslcluster.clustering.kmeans import KMeans

    print(f"# streaming_cluster | {machine()}", flush=True)
    tmp = Path(tempfile.mkdtemp(dir=a.dir, prefix="sslcluster-stream-"))
    try:
        folder = tmp / "runs" / "bench" / "embeddings" / "test"
        t = time.perf_counter()
        y = write_set(folder, a.n, a.dim, a.k)
        size = (folder / "embeddings.npy").stat().st_size
        print(f"{a.n:,} x {a.dim} float32 ({size / 2**30:.2f} GiB), k={a.k}; written in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        d = KMeans(k=a.k)
        ts = d.resolved_train_size(a.n)
        bare = child(BARE)
        print(f"bare `import sslcluster, torch`: peak RSS {bare['peak_mib']:.0f} MiB", flush=True)
        pairs = []
        for r in range(a.repeats):  # stage and direct alternate, so slow spells of the machine fall on both
            proj = child(PROJECT, str(tmp / "runs"), str(a.k))
            labels = np.load(tmp / "runs" / "bench" / "clusters" / "kmeans-test" / "labels.npy")
            times = json.loads((tmp / "runs" / "bench" / "clusters" / "kmeans-test" / "record.json").read_text())[
                "times_s"]
            print(f"[{r + 1}/{a.repeats}] sslcluster cluster stage (default k-means: sample {ts:,}, {d.max_iter} it, "
                  f"l2 off): {proj['seconds']:.1f} s, peak RSS {proj['peak_mib']:.0f} MiB = "
                  f"{proj['peak_mib'] - bare['peak_mib']:.0f} MiB above the bare import, NMI "
                  f"{normalized_mutual_info_score(y, labels):.4f}; stage parts (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in times.items()), flush=True)
            del labels
            direct = child(DIRECT, str(folder / "embeddings.npy"), str(a.k), str(ts), str(d.max_iter),
                           str(ASSIGN_BLOCK), str(d.n_init), str(d.kmeanspp_sample), str(tmp / "direct.npy"))
            labels = np.load(tmp / "direct.npy")
            print(f"[{r + 1}/{a.repeats}] direct faiss (same sample, {d.n_init} k-means++ restarts, {d.max_iter} it, "
                  f"memory-mapped blocks): {direct['seconds']:.1f} s, peak RSS {direct['peak_mib']:.0f} MiB (a process "
                  f"without torch), NMI {normalized_mutual_info_score(y, labels):.4f}", flush=True)
            pairs.append((proj["seconds"], direct["seconds"]))
        if a.repeats > 1:
            stage_s, direct_s = (np.array(v) for v in zip(*pairs))
            print(f"stage over direct: each pair {', '.join(f'{100 * (p / q - 1):+.0f} %' for p, q in pairs)}; "
                  f"median stage {np.median(stage_s):.1f} s against median direct {np.median(direct_s):.1f} s: "
                  f"{100 * (np.median(stage_s) / np.median(direct_s) - 1):+.0f} %; totals "
                  f"{100 * (stage_s.sum() / direct_s.sum() - 1):+.0f} %", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
