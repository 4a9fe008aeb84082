"""k-means preprocessing variants on a run's validation rows (the part of train ``evaluate.validation`` holds aside),
never the test split: projection or backbone features, L2, PCA-whitening (benchmarks/RESULTS.md, own-folder recipe).

    python benchmarks/own_folder_preprocess.py RUN_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "proj_l2": ("train_projection", dict(l2=True, pca_dim=None, whiten=False)),
    "proj_l2_pca32w": ("train_projection", dict(l2=True, pca_dim=32, whiten=True)),
    "bb_l2": ("train", dict(l2=True, pca_dim=None, whiten=False)),
    "bb_l2_pca32w": ("train", dict(l2=True, pca_dim=32, whiten=True)),
    "bb_l2_pca64w": ("train", dict(l2=True, pca_dim=64, whiten=True)),
}


def main() -> None:
    from omegaconf import OmegaConf

    from sslcluster.stages.evaluate import validation_metrics

    run = Path(sys.argv[1])
    base = OmegaConf.load(run / "config.yaml")
    for name, (features, pre) in VARIANTS.items():
        cfg = base.copy()
        for key, value in pre.items():
            cfg.clustering.preprocess[key] = value
        m = validation_metrics(cfg, run / "embeddings" / features, run / "embeddings" / "train")
        print(name, {k: round(v, 4) for k, v in m.items() if k in ("val_nmi", "val_ari", "val_acc")}, flush=True)


if __name__ == "__main__":
    main()
