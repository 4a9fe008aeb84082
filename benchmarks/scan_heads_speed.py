"""The SCAN heads' cost through the cluster stage (``clustering=scan``, its defaults: 10 linear heads, 20 neighbours,
100 epochs of batch 512): N x D planted blobs written to disk as a run's backbone embeddings, their projection (a
fixed random linear map to 128 dimensions) as the mining features; seconds of the fit (mining, training, selection)
and of the whole stage, NMI against the planted labels beside k-means fitted the same way. The run folder is deleted
at the end.

    python benchmarks/scan_heads_speed.py                       # 50,000 x 512, k=10
    python benchmarks/scan_heads_speed.py --n 5000 --epochs 10  # seconds
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, planted_blobs  # noqa: E402  (also puts the repository on sys.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--epochs", type=int, default=None, help="clustering.algorithm.epochs (default: the config's)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    from sklearn.metrics import normalized_mutual_info_score

    from sslcluster.config import compose
    from sslcluster.pipeline import stage_cluster
    from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
    from sslcluster.store.rundir import RunDir

    tmp = Path(tempfile.mkdtemp(prefix="scan_speed_"))
    try:
        x, y = planted_blobs(args.n, args.dim, args.k, spread=1.0, noise=2.0, seed=0)
        proj = x @ np.random.default_rng(1).standard_normal((args.dim, 128)).astype(np.float32)
        run = RunDir.create(tmp, "r")
        index = EmbeddingIndex([f"i{i}" for i in range(args.n)], [f"p{i}" for i in range(args.n)], y)
        for name, arr, feats in (("test", x, "backbone"), ("test_projection", proj, "projection")):
            write_embeddings(run.embeddings_dir(name), arr, index, split="test", features=feats, checkpoint="c")
        del x, proj
        base = [f"run.root={tmp}", "run.key=r", "logger=none", f"clustering.algorithm.k={args.k}"]
        out: dict = {"n": args.n, "dim": args.dim, "k": args.k, "machine": machine()}
        for name, extra in (("kmeans", ["clustering=kmeans", "clustering.features=backbone"]),
                            ("scan", ["clustering=scan", f"clustering.algorithm.device={args.device}"]
                             + ([f"clustering.algorithm.epochs={args.epochs}"] if args.epochs else []))):
            t0 = time.perf_counter()
            stage_cluster(compose(base + extra + [f"clustering.key={name}"]))
            wall = time.perf_counter() - t0
            rec = json.loads((tmp / "r" / "clusters" / name / "record.json").read_text())
            labels = np.load(tmp / "r" / "clusters" / name / "labels.npy")
            out[name] = {"fit_s": round(rec["times_s"]["fit"], 2), "stage_s": round(wall, 2),
                         "nmi": round(float(normalized_mutual_info_score(y, labels)), 4),
                         "params": {k: rec["params"].get(k) for k in ("num_heads", "num_neighbors", "epochs",
                                                                    "batch_size", "head", "device")}}
            print(json.dumps({name: out[name]}), flush=True)
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
