"""Independent checks of a finished run's figures, from its files only (no sslcluster code):

    python benchmarks/validity_checks.py acc <run dir>     # each clusters/<key>/metrics.json acc vs a one-to-one
                                                          # Hungarian recomputation from labels.npy + index.csv
    python benchmarks/validity_checks.py lars <checkpoint> # optimiser groups: 1-d parameters in weight-decay-0
                                                          # groups, the others in decayed ones
    python benchmarks/validity_checks.py splits <run dir>  # embeddings/train and embeddings/test share no file
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment


def index_labels(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(folder / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["id"] for r in rows], [r["path"] for r in rows], np.array([int(r["label"]) for r in rows])


def hungarian_acc(t: np.ndarray, p: np.ndarray) -> float:
    """One-to-one: clusters (noise -1 excluded) x classes overlap, best matching; everything else is an error."""
    clusters, classes = np.unique(p[p >= 0]), np.unique(t)
    overlap = np.array([[np.sum((p == c) & (t == k)) for k in classes] for c in clusters])
    r, c = linear_sum_assignment(-overlap)
    return float(overlap[r, c].sum() / len(t))


def check_acc(run: Path) -> bool:
    ok = True
    for mpath in sorted(run.glob("clusters/*/metrics.json")):
        cdir = mpath.parent
        m = json.loads(mpath.read_text())
        rec = json.loads((cdir / "record.json").read_text())
        emb = Path(rec["embeddings"])
        emb = emb if emb.is_absolute() else run / emb
        _, _, t = index_labels(emb)
        p = np.load(cdir / "labels.npy")
        keep = t >= 0
        ref = hungarian_acc(t[keep], p[keep])
        same = abs(ref - m["acc"]) < 1e-12
        ok &= same
        print(f"{cdir.name:28s} k={m['n_clusters']:3d}  acc={m['acc']:.6f}  recomputed={ref:.6f}  "
              f"{'EQUAL' if same else 'DIFFERENT'}  (purity {m.get('purity', float('nan')):.4f})")
    return ok


def check_lars(ckpt: Path) -> bool:
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["optimizer_states"][0]
    ok, counts = True, {"1-d in wd=0": 0, "1-d in wd>0": 0, ">1-d in wd>0": 0, ">1-d in wd=0": 0}
    for g in state["param_groups"]:
        wd = g["weight_decay"]
        for i in g["params"]:
            buf = state["state"].get(i, {}).get("momentum_buffer")
            if buf is None:
                continue
            one_d = buf.ndim == 1
            key = f"{'1-d' if one_d else '>1-d'} in wd{'=0' if wd == 0 else '>0'}"
            counts[key] += 1
            ok &= (wd == 0) == one_d
    print(f"{ckpt}: groups weight_decay={[g['weight_decay'] for g in state['param_groups']]}, parameters: {counts}")
    return ok


def check_splits(run: Path) -> bool:
    ids_tr, paths_tr, _ = index_labels(run / "embeddings" / "train")
    ids_te, paths_te, _ = index_labels(run / "embeddings" / "test")
    shared = set(paths_tr) & set(paths_te)
    print(f"{run}: train {len(paths_tr)} files, test {len(paths_te)} files, shared {len(shared)}")
    return not shared


if __name__ == "__main__":
    what, target = sys.argv[1], Path(sys.argv[2])
    good = {"acc": check_acc, "lars": check_lars, "splits": check_splits}[what](target)
    print("OK" if good else "MISMATCH")
    sys.exit(0 if good else 1)
