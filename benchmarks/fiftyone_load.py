"""Time and memory to load a run of many images into FiftyOne (``sslcluster fiftyone``), on a synthetic run.

The run is made through :mod:`sslcluster.store` from an image-folder tree with ``train/`` and ``test/`` (e.g. the
CIFAR-10 JPEG copy, 60,000 files): ``embeddings/train``, ``embeddings/test`` and ``embeddings/all`` (every image;
synthetic 128-d features, a Gaussian blob per class, so nothing is trained) with their ``index.csv`` labels, and a
k-means clustering (k = 10, scikit-learn's MiniBatchKMeans) of ``all`` with its 2-D PCA points kept as evaluation
keeps its projection. Then the stage runs in a child process under ``/usr/bin/time -v`` (its peak resident memory),
twice: the first call creates the dataset, the second updates it.

``python benchmarks/fiftyone_load.py --images /tmp/cifar10 --root /tmp/fo-bench [--own-points | --no-own-points]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sslcluster.data.sources import ImageFolderSource
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.io import write_json, write_npy
from sslcluster.store.rundir import RunDir


def make_run(images: Path, root: Path, key: str, dim: int, own_points: bool) -> RunDir:
    """The synthetic run (see the module docstring)."""
    run = RunDir.create(root, key, overwrite=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, dim)).astype(np.float32) * 3
    parts = {}
    for split in ("train", "test"):
        src = ImageFolderSource(str(images), split=split, validate="header")
        assert src.labels is not None
        x = centres[src.labels] + rng.normal(size=(len(src), dim)).astype(np.float32)
        write_embeddings(run.embeddings_dir(split), x, EmbeddingIndex(src.ids, src.paths, src.labels, src.classes),
                         split=split, features="backbone")
        parts[split] = (src, x)
    ids = [f"{s}/{i}" for s in ("train", "test") for i in parts[s][0].ids]
    paths = [p for s in ("train", "test") for p in parts[s][0].paths]
    labels = np.concatenate([parts[s][0].labels for s in ("train", "test")])
    x = np.concatenate([parts[s][1] for s in ("train", "test")])
    index = EmbeddingIndex(ids, paths, labels, parts["train"][0].classes)
    write_embeddings(run.embeddings_dir("all"), x, index, split="all", features="backbone")
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    pred = MiniBatchKMeans(n_clusters=10, random_state=0, n_init=1).fit_predict(x).astype(np.int64)
    cdir = run.cluster_dir("kmeans-all")
    cdir.mkdir(parents=True)
    write_npy(cdir / "labels.npy", pred)
    write_json(cdir / "record.json", {"key": "kmeans-all", "algorithm": "kmeans", "params": {"k": 10},
                                      "embeddings": "embeddings/all", "representation": "learned",
                                      "primary": True, "ids_sha256": index.ids_sha256(), "status": "complete"})
    if own_points:
        run.clustering("kmeans-all").write_projection("pca", np.arange(len(x)),
                                                      PCA(n_components=2, random_state=0).fit_transform(x))
    run.update_metrics({"nmi": 0.0, "note": "synthetic run for benchmarks/fiftyone_load.py"})
    run.release()
    return run


def _mongod_peak_kib() -> int:
    """The largest peak resident memory (VmHWM, KiB) of the running ``mongod`` processes; 0 when none."""
    peak = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"mongod" in (proc / "cmdline").read_bytes().split(b"\0")[0]:
                hwm = re.search(r"VmHWM:\s+(\d+)", (proc / "status").read_text())
                peak = max(peak, int(hwm.group(1)) if hwm else 0)
        except OSError:
            continue
    return peak


def timed_stage(root: Path, key: str, extra: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS GiB, mongod's peak RSS GiB, last output line) of ``sslcluster fiftyone`` in a child
    process (mongod, which FiftyOne starts beside it, is sampled every 0.2 s)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "sslcluster.cli", "fiftyone", f"run.key={key}",
           f"run.root={root}", *extra]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mongod = 0
    while child.poll() is None:
        mongod = max(mongod, _mongod_peak_kib())
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    out = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    line = [ln for ln in out.stderr.splitlines() if "FiftyOne dataset" in ln]
    return (wall, int(rss.group(1)) / 2**20 if rss else float("nan"), mongod / 2**20,
            line[-1].split(": ", 1)[-1] if line else "")


def main() -> None:
    """Make the run, load it twice, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="an image folder with train/ and test/")
    parser.add_argument("--root", type=Path, required=True, help="run root for the synthetic run")
    parser.add_argument("--key", default="fo-load")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--own-points", action=argparse.BooleanOptionalAction, default=True,
                        help="keep 2-D points in the run (else FiftyOne Brain computes fiftyone.method)")
    parser.add_argument("--method", default="umap", help="fiftyone.method when the run keeps no points")
    args = parser.parse_args()
    t0 = time.perf_counter()
    make_run(args.images, args.root, args.key, args.dim, args.own_points)
    print(f"synthetic run {args.root / args.key}: {time.perf_counter() - t0:.1f} s")
    for call in ("first call (creates the dataset)", "second call (updates it)"):
        wall, rss, mongod, line = timed_stage(args.root, args.key, [f"fiftyone.method={args.method}"])
        print(f"{call}: {wall:.1f} s wall (process start, import, database start included), peak RSS "
              f"{rss:.2f} GiB (sslcluster) + {mongod:.2f} GiB (mongod); {line}")
    print(f"os.cpu_count()={os.cpu_count()}")


if __name__ == "__main__":
    main()
