"""Images per second of the SCAN stage's two training steps beside pretraining's, on one machine, same backbone,
same batch size, same data, in one process one after the other.

An image is one augmented view the training step reads: SimCLR 2 views per image, SCAN 2 per pair (anchor and
neighbour), self-labelling 2 per image (weak and strong view). Each figure is the median over the epochs after
the first (warm-up) of images / wall seconds of the epoch (Lightning's loop with data loading, augmentation,
forward, backward and the optimiser; epoch checkpoints are written between epochs, outside the timed part).

    python benchmarks/scan_speed.py --epochs 4                      # digits, tiny CNN, batch 128 (the defaults)
    python benchmarks/scan_speed.py --epochs 4 --override backbone.module.width=8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def main(argv: list[str] | None = None) -> int:
    """Run pretraining and the SCAN stage for ``--epochs`` each; print (and return as JSON) the images/s."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--override", action="append", default=[], help="more config overrides (key=value)")
    args = parser.parse_args(argv)

    import torch

    from sslcluster.config import compose
    from sslcluster.pipeline import open_run
    from sslcluster.ssl.scan import EpochCurve
    from sslcluster.stages.pretrain import pretrain
    from sslcluster.stages.scan import scan_stage

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"run.root={tmp}", "run.key=speed", "logger=none", "monitor.knn=false", "monitor.linear=false",
                     f"trainer.max_epochs={args.epochs}", f"data.batch_size={args.batch_size}",
                     f"scan.epochs={args.epochs}", f"scan.batch_size={args.batch_size}",
                     f"scan.selflabel.epochs={args.epochs}", f"scan.selflabel.batch_size={args.batch_size}",
                     "evaluate.plots.enabled=false", *args.override]
        cfg = compose(overrides)
        curve = EpochCurve()
        with open_run(cfg, "pretrain", reuse=False) as run:
            ckpt = pretrain(cfg, run, callbacks=[curve])
            scan_stage(cfg, run, ckpt)
            scan_rows = _rows(run.path / "clusters" / "scan_backbone-test" / "curve.csv")
            sl_rows = _rows(run.path / "clusters" / "scan_selflabel-test" / "curve.csv")

    def median(rows: list[dict]) -> float:
        later = rows[1:] or rows
        return statistics.median(float(r["images_per_s"]) for r in later)

    out = {"backbone": cfg.backbone.name, "width": cfg.backbone.module.get("width"), "batch_size": args.batch_size,
           "epochs": args.epochs, "torch_threads": torch.get_num_threads(),
           "pretrain_images_per_s": median(curve.rows), "scan_images_per_s": median(scan_rows),
           "selflabel_images_per_s": median(sl_rows)}
    print(json.dumps(out, indent=1))
    return 0


def _rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    sys.exit(main())
