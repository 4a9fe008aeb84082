"""k-means preprocessing choices compared on the validation part of finished runs (never the test split):
``val_nmi`` / ``val_ari`` of the learned features the run clusters and of its pixel baseline, for L2 alone and for L2
then PCA to 8, 16, 32 dimensions whitened, on a fraction of the TRAIN split (evaluate.validation).

    python benchmarks/val_preprocess.py runs/<run> [runs/<run> ...] --fraction 0.5

The figures behind DINO's and VICReg's digits default (benchmarks/RESULTS.md, "Methods on digits").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from _common import machine  # noqa: E402  (also puts the repository on sys.path)

CHOICES = ((None, False), (8, True), (16, True), (32, True))  # (pca_dim, whiten), L2 first in each


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders (config.yaml, embeddings/train*, pixels_train)")
    p.add_argument("--fraction", type=float, default=0.5, help="evaluate.validation.fraction (default 0.5)")
    a = p.parse_args(argv)
    from omegaconf import OmegaConf

    from sslcluster.stages.evaluate import validation_metrics

    print(f"# val_preprocess | {machine()}", flush=True)
    rows = []
    for run in a.runs:
        cfg = OmegaConf.load(run / "config.yaml")
        cfg.evaluate.validation.fraction = a.fraction
        learned = run / "embeddings" / ("train_projection" if cfg.clustering.features == "projection" else "train")
        for name, feats in (("learned", learned), ("pixels", run / "embeddings" / "pixels_train")):
            cells = []
            for pca_dim, whiten in CHOICES:
                cfg.clustering.preprocess.l2, cfg.clustering.preprocess.umap_dim = True, None
                cfg.clustering.preprocess.pca_dim, cfg.clustering.preprocess.whiten = pca_dim, whiten
                m = validation_metrics(cfg, feats, run / "embeddings" / "train")
                rows.append({"run": run.name, "features": name, "pca_dim": pca_dim, "whiten": whiten, **m})
                cells.append(f"{'L2' if pca_dim is None else f'pca{pca_dim}w'} {m['val_nmi']:.3f}/{m['val_ari']:.3f}")
            print(f"{cfg.method.name} seed {cfg.seed} {run.name} {name}: " + "  ".join(cells), flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
