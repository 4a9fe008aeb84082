"""Fidelity: does the device path train as well as lightly's CPU pipeline? Both in one run, same everything else.

For each pipeline (``data.pipeline=cpu``: the config's lightly transform in DataLoader workers, i.e. lightly's
reference pipeline; ``data.pipeline=device``: :mod:`sslcluster.data.gpu_augment` on the device) it runs the
project's own stages with the same config, seed, model, optimiser and schedule: pretrain for ``--epochs``,
export backbone features of the train and test splits, kNN top-1 on the test split (k=200, T=0.1, train split
as the bank). It prints both accuracies, the difference in points, the training times, and writes a JSON.

The H100 figure (40 epochs on the CIFAR-10 JPEG copy, device within 0.5 points of lightly's) -- not
measured on a CPU:

    mkdir -p .gpu/data && tar xzf .gpu/cifar10-jpeg.tar.gz -C .gpu/data
    python benchmarks/fidelity.py --epochs 40 --json .gpu/fidelity.json -- \\
        data=cifar10_folder data.source.root=.gpu/data/cifar10 augmentation=simclr backbone=resnet18 \\
        backbone.module.cifar_stem=true trainer=gpu data.batch_size=512 data.num_workers=16

A tiny CPU setting (digits, the small CNN, 2 epochs):

    python benchmarks/fidelity.py --epochs 2 -- data.batch_size=128 backbone.module.width=8

Anything after ``--`` is a Hydra override of the project config (``configs/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sslcluster.config import compose  # noqa: E402
from sslcluster.pipeline import open_run  # noqa: E402
from sslcluster.stages.evaluate import evaluate_representation  # noqa: E402
from sslcluster.stages.export import export_split  # noqa: E402
from sslcluster.stages.pretrain import pretrain  # noqa: E402

PIPELINES = ("cpu", "device")
TOLERANCE_POINTS = 0.5


def train_and_score(overrides: list[str], pipeline: str, epochs: int, run_root: Path, stamp: str,
                    seed: int = 0) -> dict[str, Any]:
    """Pretrain with ``data.pipeline=pipeline``, export train/test, kNN top-1 on test."""
    cfg = compose([*overrides, f"data.pipeline={pipeline}", f"trainer.max_epochs={epochs}", f"seed={seed}",
                   f"run.root={run_root}", f"run.key=fidelity-{pipeline}-s{seed}-{stamp}", "logger=none",
                   "evaluate.linear_probe=false"])
    with open_run(cfg, "fidelity") as run:
        t0 = time.perf_counter()
        ckpt = pretrain(cfg, run)
        train_s = time.perf_counter() - t0
        feats = {s: export_split(cfg, run, s, ckpt, "backbone") for s in ("train", "test")}
        knn = evaluate_representation(cfg, feats["train"], feats["test"])["knn_top1"]
    return {"pipeline": pipeline, "seed": seed, "knn_top1": knn, "train_s": train_s, "epochs": epochs,
            "run": str(run.path)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, overrides = argv[:k], argv[k + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--pipelines", default="cpu,device", help="which to train (both: the comparison)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; the comparison uses the means")
    p.add_argument("--run-root", help="where the runs go (default: a temporary folder)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    pipelines = [x for x in args.pipelines.split(",") if x]
    if set(pipelines) - set(PIPELINES):
        p.error(f"--pipelines: valid are {', '.join(PIPELINES)}")
    run_root = Path(args.run_root or tempfile.mkdtemp(prefix="sslcluster-fidelity-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    results: dict[str, Any] = {"overrides": overrides, "epochs": args.epochs, "seeds": seeds, "runs": {}}
    for seed in seeds:  # pipelines alternate within a seed, so drifts of the machine hit both alike
        for pipe in pipelines:
            r = train_and_score(overrides, pipe, args.epochs, run_root, stamp, seed)
            results["runs"].setdefault(pipe, []).append(r)
            print(f"fidelity: {pipe:6s} seed {seed}: kNN top-1 {r['knn_top1']:.4f}  training {r['train_s']:.1f} s",
                  flush=True)
    summary = {pipe: {"knn_top1": statistics.mean(r["knn_top1"] for r in runs),
                      "knn_top1_sd": statistics.stdev([r["knn_top1"] for r in runs]) if len(runs) > 1 else None,
                      "train_s": statistics.mean(r["train_s"] for r in runs)}
               for pipe, runs in results["runs"].items()}
    results["summary"] = summary
    for pipe, m in summary.items():
        print(f"fidelity: {pipe:6s} mean kNN top-1 {m['knn_top1']:.4f} over {len(seeds)} seed(s), "
              f"training {m['train_s']:.1f} s", flush=True)
    if {"cpu", "device"} <= set(summary):
        diff = 100 * (summary["device"]["knn_top1"] - summary["cpu"]["knn_top1"])
        results["device_minus_cpu_points"] = diff
        results["within_tolerance"] = diff >= -TOLERANCE_POINTS
        print(f"fidelity: device - cpu = {diff:+.2f} points (target: >= -{TOLERANCE_POINTS}) "
              f"{'met' if results['within_tolerance'] else 'NOT met'}; speed-up "
              f"{summary['cpu']['train_s'] / summary['device']['train_s']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
