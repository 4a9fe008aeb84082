"""Training images per second of an image folder's run, the old defaults against today's, in one invocation on one
machine: each configuration trains the same number of SimCLR steps through ``python train.py`` (pretraining only),
one after the other, and the rate is read from the run's ``metrics.json`` (``train_images_per_s``).

- ``before``: float32, contiguous (NCHW) weights, lightly's transforms in DataLoader workers (``data.pipeline=cpu``,
  the CPU default before the own-folder recipe);
- ``after``: the image folder's defaults (``data.precision=auto``, ``data.channels_last=auto``,
  ``data.pipeline=device``): bf16 + channels-last where the processor computes bfloat16 natively.

    python benchmarks/own_folder_rate.py --root /tmp/own_folder/cifar10 --steps 120
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine  # noqa: E402  (also puts the repository on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "before": ["trainer.precision=32-true", "trainer.speed.channels_last=false", "data.pipeline=cpu"],
    "after": [],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="an image folder (with train/ and test/, or flat)")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    out: dict = {"machine": machine(), "root": args.root, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in CONFIGS.items():
            cmd = [sys.executable, "train.py", "data=image_folder", f"data.source.root={args.root}",
                   "trainer.max_epochs=-1", f"trainer.max_steps={args.steps}", f"run.root={tmp}", f"run.key={name}",
                   "stages.export=false", "stages.cluster=false", "stages.evaluate=false", "stages.baseline=false",
                   "monitor.knn=false", "monitor.linear=false", *overrides]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            metrics = json.loads((Path(tmp) / name / "metrics.json").read_text())
            out[name] = {"overrides": overrides, "images_per_s": round(float(metrics["train_images_per_s"]), 1),
                         "fit_s": round(float(metrics["train_fit_s"]), 1)}
            print(f"{name:7s} {out[name]['images_per_s']:8.1f} images/s  ({' '.join(overrides) or 'defaults'})",
                  flush=True)
    out["after_over_before"] = round(out["after"]["images_per_s"] / out["before"]["images_per_s"], 2)
    print(f"after / before: {out['after_over_before']}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
