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

``summary``: the comparison over the JSONs of several runs (seeds run in parts, or an interrupted run; pairs by
seed), with the same verdict: ``python benchmarks/fidelity.py summary a.json b.json``. The data sets of the
CPU figures in ``benchmarks/RESULTS.md`` are built by ``benchmarks/fidelity_data.py``.

``sharpness``: the views themselves, without training. The same images (a folder, any sizes) go through
lightly's ``SimCLRTransform`` (PIL, in this process) and through the device path (the decoded cache and
:mod:`sslcluster.data.gpu_augment`), both built from the project's ``augmentation`` config at
``--image-size`` (normalisation off); it prints per path the mean absolute horizontal gradient of the views
(sharpness), the crop-area and aspect statistics and where the crops lie in the whole image, and as its last
line ``sharpness device/lightly = R``:

    python benchmarks/fidelity.py sharpness --root DIR --image-size 32 --seed 0
    python benchmarks/fidelity.py sharpness --make-photos DIR   # writes a folder of photographs at many sizes
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

#: "device8": the device path with ``augmentation.quantize=true`` (8-bit rounding after each op, as PIL)
PIPELINES = ("cpu", "device", "device8")
TOLERANCE_POINTS = 0.5


def train_and_score(overrides: list[str], pipeline: str, epochs: int, run_root: Path, stamp: str,
                    seed: int = 0) -> dict[str, Any]:
    """Pretrain with ``data.pipeline=pipeline``, export train/test, kNN top-1 on test."""
    quantize = ["augmentation.quantize=true"] if pipeline == "device8" else []
    cfg = compose([*overrides, *quantize, f"data.pipeline={pipeline.rstrip('8')}", f"trainer.max_epochs={epochs}",
                   f"seed={seed}",
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


# -- sharpness: the views of both paths on the same images ---------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def make_photo_folder(root: str | Path, n: int = 60, seed: int = 0, low: int = 48, high: int = 427) -> Path:
    """``n`` real photographs at many sizes: random crops of scikit-learn's two sample photographs (427x640),
    resized (antialiased) to a random width and height each in [low, high] (aspect ratios up to about 9:1),
    saved as PNG under ``root``. Returns ``root``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = photos[i % len(photos)]
        ch, cw = int(rng.integers(200, im.shape[0] + 1)), int(rng.integers(200, im.shape[1] + 1))
        y, x = int(rng.integers(0, im.shape[0] - ch + 1)), int(rng.integers(0, im.shape[1] - cw + 1))
        w, h = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
        Image.fromarray(im[y:y + ch, x:x + cw]).resize((w, h), Image.LANCZOS).save(root / f"photo{i:03d}.png")
    return root


def _record_lightly_crops(store: list[tuple[int, int, int, int, int, int]]) -> Any:
    """Patch torchvision's ``RandomResizedCrop`` parameter draw (``v2``'s ``make_params``, which lightly >= 1.6
    uses, and ``v1``'s ``get_params``) so each drawn box is also appended to ``store`` as (top, left, h, w,
    image h, image w); returns a function that restores both."""
    import torchvision.transforms as T
    from torchvision.transforms import v2
    from torchvision.transforms.v2._utils import query_size

    v1_get, v2_make = T.RandomResizedCrop.get_params, v2.RandomResizedCrop.make_params

    def v1_recording(img: Any, scale: Any, ratio: Any) -> tuple[int, int, int, int]:
        box = v1_get(img, scale, ratio)
        w, h = T.functional.get_image_size(img)
        store.append((*box, h, w))
        return box

    def v2_recording(self: Any, flat_inputs: list[Any]) -> dict[str, Any]:
        params = v2_make(self, flat_inputs)
        h, w = query_size(flat_inputs)
        store.append((params["top"], params["left"], params["height"], params["width"], h, w))
        return params

    T.RandomResizedCrop.get_params = staticmethod(v1_recording)  # type: ignore[method-assign]
    v2.RandomResizedCrop.make_params = v2_recording  # type: ignore[method-assign]

    def restore() -> None:
        T.RandomResizedCrop.get_params = staticmethod(v1_get)  # type: ignore[method-assign]
        v2.RandomResizedCrop.make_params = v2_make  # type: ignore[method-assign]

    return restore


def crop_statistics(boxes: "Any") -> dict[str, float]:
    """Statistics of crop boxes (n, 6) (top, left, h, w, image h, image w): area as a fraction of the whole
    image, log aspect ratio, where the crops' centres lie (mean, sd, as fractions of the image) and how often a
    crop touches the image's left or right edge."""
    import numpy as np

    b = np.asarray(boxes, dtype=np.float64)
    top, left, h, w, ih, iw = b.T
    cx, cy = (left + w / 2) / iw, (top + h / 2) / ih
    return {"area": float((h * w / (ih * iw)).mean()), "log_aspect_mean": float(np.log(w / h).mean()),
            "log_aspect_sd": float(np.log(w / h).std()), "centre_x_mean": float(cx.mean()),
            "centre_x_sd": float(cx.std()), "centre_y_sd": float(cy.std()),
            "touch_lr_edge": float(((left <= 0) | (left + w >= iw)).mean())}


def mean_gradient(views: "Any") -> "Any":
    """Per view (n, C, S, S) in [0, 1]: the mean absolute horizontal gradient (n,)."""
    return (views[..., :, 1:] - views[..., :, :-1]).abs().flatten(1).mean(1)


def sharpness(argv: list[str]) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from sslcluster.data.device_data import DEFAULT_SIDE_FACTOR, decode_source
    from sslcluster.data.gpu_augment import from_views_config
    from sslcluster.stages.common import build

    p = argparse.ArgumentParser(prog="fidelity.py sharpness", description="sharpness of both paths' views")
    p.add_argument("--root", help="folder of images (searched recursively)")
    p.add_argument("--make-photos", help="write a folder of photographs at many sizes here, then measure it")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=8, help="views per image and path")
    p.add_argument("--max-images", type=int, default=200)
    p.add_argument("--max-side", type=int, help="device cache cap (default: the data config's, 6 x image size)")
    p.add_argument("--quantize", choices=["config", "true", "false"], default="config")
    p.add_argument("--augmentation", default="simclr")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.make_photos:
        make_photo_folder(args.make_photos, seed=args.seed)
        args.root = args.root or args.make_photos
    if not args.root:
        p.error("--root (or --make-photos) is required")
    paths = sorted(q for q in Path(args.root).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)[:args.max_images]
    if not paths:
        raise SystemExit(f"fidelity sharpness: --root {args.root}: no images found")
    s = args.image_size
    cfg = compose([f"augmentation={args.augmentation}", "method=simclr", f"data.image_size={s}",
                   "data.channels=3", "augmentation.views.normalize=null"])
    quantize = bool(cfg.augmentation.get("quantize", False)) if args.quantize == "config" else args.quantize == "true"
    max_side = args.max_side or DEFAULT_SIDE_FACTOR * s
    pil = [Image.open(q).convert("RGB") for q in paths]

    # lightly's pipeline (PIL), its crop boxes recorded
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    lightly_tr = build(cfg.augmentation.views)
    boxes_ref: list[tuple[int, int, int, int, int, int]] = []
    restore = _record_lightly_crops(boxes_ref)
    try:
        ref = torch.stack([v for _ in range(args.views) for im in pil for v in lightly_tr(im)])
    finally:
        restore()

    # the device path: the decoded cache (whole images up to max_side), views with their sizes
    class _Listed:
        def __init__(self) -> None:
            self.paths = [str(q) for q in paths]

        def __len__(self) -> int:
            return len(pil)

        def load(self, i: int) -> Image.Image:
            return pil[i]

    arr, sizes = decode_source(_Listed(), max_side, 3)  # type: ignore[arg-type]
    images = torch.from_numpy(arr).repeat(args.views, 1, 1, 1)
    sz = torch.from_numpy(sizes).repeat(args.views, 1)
    tr = from_views_config(cfg.augmentation.views, quantize=quantize)
    g = torch.Generator().manual_seed(args.seed)
    ours, boxes_dev = [], []
    for k in range(0, len(images), 256):
        for view in tr.views:
            rec: dict[str, Any] = {}
            ours.append(view(images[k:k + 256], g, params=rec, sizes=sz[k:k + 256]))
            bx = rec["boxes"].numpy()
            boxes_dev.append(np.concatenate([bx, sz[k:k + 256].numpy()], axis=1))
    dev = torch.cat(ours)
    res: dict[str, Any] = {"root": str(args.root), "images": len(paths), "image_size": s, "views": len(dev),
                           "max_side": max_side, "quantize": quantize, "seed": args.seed,
                           "image_sides": [min(min(im.size) for im in pil), max(max(im.size) for im in pil)]}
    for name, views, boxes in (("lightly", ref, boxes_ref), ("device", dev, np.concatenate(boxes_dev))):
        grad = mean_gradient(views)
        stats = {"gradient": float(grad.mean()), "gradient_se": float(grad.std() / len(grad) ** 0.5),
                 **crop_statistics(boxes)}
        res[name] = stats
        print(f"{name:8s} mean |dx| {stats['gradient']:.4f} (se {stats['gradient_se']:.4f})  crop area "
              f"{stats['area']:.3f}  log aspect {stats['log_aspect_mean']:+.3f} sd {stats['log_aspect_sd']:.3f}  "
              f"centre x {stats['centre_x_mean']:.3f} sd {stats['centre_x_sd']:.3f}  centre y sd "
              f"{stats['centre_y_sd']:.3f}  touches left/right edge {stats['touch_lr_edge']:.3f}", flush=True)
    res["ratio"] = res["device"]["gradient"] / res["lightly"]["gradient"]
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{len(paths)} images ({res['image_sides'][0]}-{res['image_sides'][1]} px), {args.views} views each, "
          f"{s}x{s}, cache cap {max_side}, quantize={quantize}, seed {args.seed}")
    print(f"sharpness device/lightly = {res['ratio']:.3f}", flush=True)
    return res


def compare(results: dict[str, Any]) -> dict[str, Any]:
    """Add to ``results`` (``runs``: pipeline -> list of run records) each pipeline's means and, for each device
    pipeline trained beside ``cpu``, the paired difference (by seed), its 90 % interval and the verdict; print them."""
    runs_of = results["runs"]
    summary = {pipe: {"knn_top1": statistics.mean(r["knn_top1"] for r in runs),
                      "knn_top1_sd": statistics.stdev([r["knn_top1"] for r in runs]) if len(runs) > 1 else None,
                      "train_s": statistics.mean(r["train_s"] for r in runs), "seeds": len(runs)}
               for pipe, runs in runs_of.items()}
    results["summary"] = summary
    for pipe, m in summary.items():
        print(f"fidelity: {pipe:6s} mean kNN top-1 {m['knn_top1']:.4f} over {m['seeds']} seed(s), "
              f"training {m['train_s']:.1f} s", flush=True)
    for dev in ("device", "device8"):
        if {"cpu", dev} <= set(summary):
            # paired by seed: both paths share the seed's model initialisation and per-epoch data order
            cpu = {r["seed"]: r["knn_top1"] for r in runs_of["cpu"]}
            pairs = [(r["seed"], 100 * (r["knn_top1"] - cpu[r["seed"]])) for r in runs_of[dev] if r["seed"] in cpu]
            if not pairs:
                continue
            diffs = [d for _, d in pairs]
            results[f"{dev}_minus_cpu_per_seed"] = dict(pairs)
            diff = statistics.mean(diffs)
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            results[f"{dev}_minus_cpu_points"] = diff
            results[f"{dev}_minus_cpu_se"] = se
            # equivalence (two one-sided tests at 5 %): the 90 % confidence interval of the paired mean difference
            # lies inside +-TOLERANCE_POINTS; a mean inside it with a wide interval shows nothing
            from scipy.stats import t as student_t

            half = float(student_t.ppf(0.95, len(diffs) - 1)) * se if len(diffs) > 1 else float("nan")
            low, high = diff - half, diff + half
            verdict = ("equivalent" if -TOLERANCE_POINTS <= low and high <= TOLERANCE_POINTS else
                       "device worse" if high < -TOLERANCE_POINTS else
                       "device better" if low > TOLERANCE_POINTS else "not decided (interval too wide)")
            results[f"{dev}_minus_cpu_ci90"] = [low, high]
            results[f"{dev}_verdict"] = verdict
            print(f"fidelity: {dev} - cpu = {diff:+.2f} +- {se:.2f} points (paired over {len(diffs)} seed(s), "
                  f"standard error; 90% interval [{low:+.2f}, {high:+.2f}]; equivalence margin "
                  f"+-{TOLERANCE_POINTS}): {verdict}; speed-up "
                  f"{summary['cpu']['train_s'] / summary[dev]['train_s']:.2f}x", flush=True)
    return results


def summarise(argv: list[str]) -> dict[str, Any]:
    """``summary A.json [B.json ...]``: the comparison over the runs of one or more JSONs written by ``--json``
    (e.g. seeds run in parts, or an interrupted run: a seed counts once both of its runs are in)."""
    p = argparse.ArgumentParser(prog="fidelity.py summary", description=summarise.__doc__)
    p.add_argument("files", nargs="+")
    p.add_argument("--json", help="write the merged results here")
    args = p.parse_args(argv)
    merged: dict[str, Any] = {"files": args.files, "runs": {}}
    for f in args.files:
        part = json.loads(Path(f).read_text())
        for key in ("overrides", "epochs"):
            if merged.setdefault(key, part[key]) != part[key]:
                raise SystemExit(f"fidelity summary: {f}: {key} differ from the first file's")
        for pipe, runs in part["runs"].items():
            have = {r["seed"] for r in merged["runs"].get(pipe, [])}
            merged["runs"].setdefault(pipe, []).extend(r for r in runs if r["seed"] not in have)
    merged["seeds"] = sorted({r["seed"] for runs in merged["runs"].values() for r in runs})
    compare(merged)
    if args.json:
        Path(args.json).write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sharpness"]:
        return sharpness(argv[1:])
    if argv[:1] == ["summary"]:
        return summarise(argv[1:])
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
            if args.json:  # after every run: an interrupted comparison keeps what it finished
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    compare(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
