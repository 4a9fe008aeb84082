"""Linear probe: sslcluster's torch probe (L-BFGS, weight decay chosen on a validation part of train) against
scikit-learn's ``LogisticRegression`` (lbfgs, C=1, max_iter=1000, on standardised features), side by side in one
run: test top-1 and wall time of each, and kNN (k=200, T=0.1, faiss, blocked) for reference.

    python benchmarks/probe_speed.py --cifar /work/data/cifar10        # 50,000 x 3,072 CIFAR-10 train pixels
    python benchmarks/probe_speed.py --cifar DIR --cifar-train-rows 60000   # 60,000 x 3,072: 10,000 flips added
    python benchmarks/probe_speed.py --embeddings RUN/embeddings/train RUN/embeddings/test   # learned features
    python benchmarks/probe_speed.py --runs RUN_A RUN_B ...              # each run's embeddings/{train,test}
    python benchmarks/probe_speed.py --cifar DIR --no-sklearn             # torch only (scikit-learn takes an hour)
    python benchmarks/probe_speed.py --digits                           # seconds (as the tests run it)
    python benchmarks/probe_speed.py ... --plain                        # also the probe without preconditioning
    python benchmarks/probe_speed.py ... --device cuda                  # the torch probe on the GPU

CIFAR-10 pixels are read from the JPEG folders (train/<class>/*.jpg, test/<class>/*.jpg) once and kept as .npy
under ``--cache`` for later runs (reading 60,000 JPEGs is not what is measured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from _common import machine  # noqa: E402  (also puts the repository on sys.path)

from sslcluster.evaluation.probes import knn_accuracy, linear_probe, sklearn_linear_probe


def cifar_pixels(root: Path, split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) float32 pixels in [0, 1] and (N,) labels of a CIFAR-10 JPEG folder split."""
    xs, ys = cache / f"cifar10_{split}_x.npy", cache / f"cifar10_{split}_y.npy"
    if xs.exists() and ys.exists():
        return np.load(xs, mmap_mode="r"), np.load(ys)
    from PIL import Image

    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / split / name).glob("*.jpg"))]
    x = np.empty((len(files), 32 * 32 * 3), dtype=np.float32)
    for i, (f, _) in enumerate(files):
        x[i] = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32).reshape(-1) / 255.0
    y = np.array([c for _, c in files], dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(xs, x)
    np.save(ys, y)
    return x, y


def compare(name: str, tx: np.ndarray, ty: np.ndarray, qx: np.ndarray, qy: np.ndarray, knn: bool,
            sklearn: bool = True, plain: bool = False, device: Any = "cpu") -> dict:
    print(f"## {name}: train {tx.shape}, test {qx.shape}", flush=True)
    row: dict = {"case": name}
    if plain:
        t0 = time.perf_counter()
        r = linear_probe(tx, ty, qx, qy, seed=0, precondition=False, device=device)
        row.update(plain_acc=r.accuracy, plain_s=time.perf_counter() - t0)
        print(f"torch probe, unpreconditioned, top-1 {r.accuracy:.4f}  {row['plain_s']:8.1f} s  (weight decay "
              f"{r.weight_decay:g}; loss evaluations {r.evaluations}, {sum(r.evaluations.values())} in all)",
              flush=True)
    t0 = time.perf_counter()
    r = linear_probe(tx, ty, qx, qy, seed=0, device=device)
    torch_s = time.perf_counter() - t0
    print(f"torch probe   top-1 {r.accuracy:.4f}  {torch_s:8.1f} s  (weight decay {r.weight_decay:g}, validation "
          f"top-1 {r.val_accuracy}; loss evaluations {r.evaluations}, {sum(r.evaluations.values())} in all)", flush=True)
    row.update(torch_acc=r.accuracy, torch_s=torch_s)
    if plain:
        print(f"preconditioning: {row['plain_s'] / torch_s:.1f}x faster, {100 * (r.accuracy - row['plain_acc']):+.2f} "
              f"points", flush=True)
    if sklearn:
        t0 = time.perf_counter()
        s = sklearn_linear_probe(tx, ty, qx, qy, seed=0)
        sk_s = time.perf_counter() - t0
        print(f"sklearn probe top-1 {s.accuracy:.4f}  {sk_s:8.1f} s", flush=True)
        print(f"difference {100 * (r.accuracy - s.accuracy):+.2f} points; torch {sk_s / torch_s:.1f}x faster",
              flush=True)
        row.update(sklearn_acc=s.accuracy, sklearn_s=sk_s)
    if knn:
        t0 = time.perf_counter()
        row["knn"] = knn_accuracy(tx, ty, qx, qy, k=200, t=0.1)
        print(f"kNN (k=200, T=0.1, faiss blocks) top-1 {row['knn']:.4f}  {time.perf_counter() - t0:.1f} s",
              flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar", type=Path, help="CIFAR-10 JPEG folder (train/, test/)")
    p.add_argument("--cifar-train-rows", type=int, default=0, help="train rows for --cifar: above the split's "
                   "50,000, horizontal flips of evenly spaced train images are added (the issue's 60,000 x 3,072)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/sslcluster-bench"), help="where pixel arrays are kept")
    p.add_argument("--embeddings", type=Path, nargs=2, metavar=("TRAIN", "TEST"), help="embeddings folders")
    p.add_argument("--runs", type=Path, nargs="+", default=[], help="run folders (RUN/embeddings/{train,test})")
    p.add_argument("--digits", action="store_true", help="scikit-learn's digits, 70/30 split (seconds)")
    p.add_argument("--no-knn", action="store_true")
    p.add_argument("--no-sklearn", action="store_true", help="torch probe only")
    p.add_argument("--plain", action="store_true", help="also the torch probe without preconditioning")
    p.add_argument("--device", default="cpu", help="where the torch probe runs: cpu (default), cuda, auto")
    a = p.parse_args(argv)
    from sslcluster.stages.common import resolve_device

    device = resolve_device(a.device, key="--device")
    print(f"# probe_speed | {machine()} | torch probe on {device}", flush=True)
    # one-time costs (imports, thread pools) paid before anything is timed
    rng = np.random.default_rng(0)
    wx, wy = rng.normal(size=(200, 8)).astype(np.float32), np.arange(200) % 2
    linear_probe(wx, wy, wx, wy, max_iter=2, device=device)
    sklearn_linear_probe(wx, wy, wx, wy, max_iter=2)
    rows = []
    if a.digits:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        tx, qx, ty, qy = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0)
        rows.append(compare("digits pixels", tx, ty, qx, qy, not a.no_knn, not a.no_sklearn, a.plain, device))
    pairs = ([tuple(a.embeddings)] if a.embeddings else []) + [(r / "embeddings" / "train", r / "embeddings" / "test")
                                                             for r in a.runs]
    for train_dir, test_dir in pairs:
        from sslcluster.store.embeddings import read_embeddings

        tr, te = (read_embeddings(f, with_labels=True) for f in (train_dir, test_dir))
        assert tr.index.labels is not None and te.index.labels is not None
        rows.append(compare(f"embeddings {train_dir.parent.parent.name}", tr.array, tr.index.labels,
                            te.array, te.index.labels, not a.no_knn, not a.no_sklearn, a.plain, device))
    if a.cifar:
        tx, ty = cifar_pixels(a.cifar, "train", a.cache)
        qx, qy = cifar_pixels(a.cifar, "test", a.cache)
        name = "CIFAR-10 pixels"
        if a.cifar_train_rows and a.cifar_train_rows > len(tx):
            extra = a.cifar_train_rows - len(tx)
            if extra > len(tx):
                raise SystemExit(f"--cifar-train-rows {a.cifar_train_rows}: at most twice the {len(tx)} train images")
            # more train rows than the split has: horizontal flips of evenly spaced train images (the files are
            # in class order, so every class gets its share; the test split stays held out: a flip is not a test
            # image)
            pick = np.round(np.linspace(0, len(tx) - 1, extra)).astype(np.int64)
            flips = np.asarray(tx[pick]).reshape(extra, 32, 32, 3)[:, :, ::-1, :].reshape(extra, -1)
            tx, ty = np.concatenate([np.asarray(tx), flips]), np.concatenate([ty, ty[pick]])
            name += f" (train: the {len(tx) - extra:,} images and horizontal flips of {extra:,} evenly spaced ones)"
        rows.append(compare(name, tx, ty, qx, qy, not a.no_knn, not a.no_sklearn, a.plain, device))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
