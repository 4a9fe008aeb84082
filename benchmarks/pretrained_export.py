"""Frozen-features export speed and memory of a timm backbone through the real pipeline path.

A timm model with random weights (the architecture of a pretrained one: no hub here) is saved to a local
``.safetensors`` file, then ``run_pipeline`` exports ``--images`` CIFAR-10 test images (a folder of links to
``/work/data/cifar10``-style ``test/<class>/*.jpg``) with ``backbone=timm backbone.weights=FILE
stages.pretrain=false``, clustering and evaluation off. Prints images/s of the export stage and the process's peak
resident memory before and after it (``ru_maxrss``).

    python benchmarks/pretrained_export.py --model vit_small_patch14_dinov2 --image-size 224 --images 512
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine  # noqa: F401  (puts the repository on sys.path)


def link_subset(src: Path, dst: Path, n: int) -> int:
    """``dst/test/<class>/`` and ``dst/train/<class>/`` with links to the first ``n`` test images (round robin
    over the classes) and one train image per class; the number of test images linked."""
    classes = sorted(p.name for p in (src / "test").iterdir() if p.is_dir())
    files = {c: sorted((src / "test" / c).iterdir()) for c in classes}
    count = 0
    for i in range(n):
        c = classes[i % len(classes)]
        f = files[c][i // len(classes)]
        (dst / "test" / c).mkdir(parents=True, exist_ok=True)
        (dst / "test" / c / f.name).symlink_to(f)
        count += 1
    for c in classes:
        (dst / "train" / c).mkdir(parents=True, exist_ok=True)
        first = sorted((src / "train" / c).iterdir())[0]
        (dst / "train" / c / first.name).symlink_to(first)
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_small_patch14_dinov2")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data", default="/work/data/cifar10", help="a folder with test/<class>/ and train/<class>/")
    args = ap.parse_args()

    import timm
    import torch
    from safetensors.torch import save_file

    from sslcluster.config import compose
    from sslcluster.pipeline import run_pipeline

    print(machine(), f"| torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        n = link_subset(Path(args.data), t / "images", args.images)
        torch.manual_seed(0)
        model = timm.create_model(args.model, num_classes=0, img_size=args.image_size) \
            if timm.models.get_pretrained_cfg(args.model).fixed_input_size \
            else timm.create_model(args.model, num_classes=0)
        weights = t / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        n_params = sum(p.numel() for p in model.parameters())
        del model
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cfg = compose([f"run.root={t / 'runs'}", "run.key=bench", "logger=none", "data=image_folder",
                       f"data.source.root={t / 'images'}", "data.num_workers=0", "backbone=timm",
                       f"backbone.name={args.model}", f"backbone.weights={weights}",
                       f"backbone.image_size={args.image_size}", "stages.pretrain=false", "stages.baseline=false",
                       "stages.cluster=false", "stages.evaluate=false", "export.splits=[test]",
                       f"export.batch_size={args.batch_size}", "report.enabled=false"])
        t0 = time.perf_counter()
        run = run_pipeline(cfg)
        wall = time.perf_counter() - t0
        metrics = json.loads((run.path / "metrics.json").read_text())
        manifest = json.loads((run.path / "embeddings" / "test" / "manifest.json").read_text())
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    export_s = metrics["time_export_s"]
    print(f"model {args.model} ({n_params / 1e6:.1f} M parameters, random weights from a local file), "
          f"{args.image_size} px, batch {args.batch_size}, CPU")
    print(f"exported {manifest['count']} of {n} images, {manifest['dim']} dims: export stage {export_s:.1f} s = "
          f"{manifest['count'] / export_s:.1f} images/s (whole run {wall:.1f} s)")
    print(f"peak resident memory: {rss_before:.0f} MiB before the run, {rss_after:.0f} MiB after it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
