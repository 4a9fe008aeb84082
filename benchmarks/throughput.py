"""Training throughput of SimCLR with each data path, measured in one run on one machine.

Modes (images per second, an image = one source image = ``views`` augmented views):

- ``model``:   the model alone, fed the same pre-made device tensors every step (the ceiling);
- ``device``:  the project's device path end to end (uint8 split on the device, batches drawn by index there,
               :mod:`sslcluster.data.gpu_augment` views, training step);
- ``trainer``: the same device path inside the Lightning ``Trainer`` exactly as ``python train.py`` runs it
               (``sslcluster.stages.pretrain`` with its callbacks: NaN guard, progress bar, logging of the lr,
               epoch ends), timed from a step after the warm-up to the last step; what a real run gets;
- ``cpu``:     the project's CPU path (``data.pipeline=cpu``: image source + the config's lightly transform in
               DataLoader workers, pinned, copied to the device);
- ``lightly``: lightly's reference pipeline (``lightly.data.LightlyDataset`` over the folder with lightly's
               ``SimCLRTransform`` in DataLoader workers) feeding the same model.

Every mode runs the same training step (forward of both views in one pass, NT-Xent, backward, SGD step) with the
same precision / channels_last / compile settings (``trainer`` through the method's own ``training_step`` and
the configured optimiser); peak GPU memory is reported per mode on CUDA.

The H100 figure (benchmarks/RESULTS.md) -- not measured on a CPU:

    python benchmarks/throughput.py --data .gpu/cifar10-jpeg.tar.gz --backbone resnet18 --cifar-stem \\
        --batch-size 512 --precision bf16 --channels-last --compile --workers 16 --steps 60 --warmup 20

A tiny CPU configuration (as the CI test runs it):

    python benchmarks/throughput.py --synthetic 64 --backbone tiny --batch-size 16 --steps 2 --warmup 1 --workers 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sslcluster.config import compose  # noqa: E402
from sslcluster.data.device_data import (DEFAULT_SIDE_FACTOR, DeviceBatches, PretrainData,  # noqa: E402
                                         load_or_build_cache)
from sslcluster.data.gpu_augment import from_views_config  # noqa: E402
from sslcluster.data.sources import ImageFolderSource  # noqa: E402
from sslcluster.ssl.backbones import ResNet, TinyCNN  # noqa: E402
from sslcluster.ssl.methods.simclr import SimCLR  # noqa: E402
from sslcluster.ssl.speed import apply_speed  # noqa: E402
from sslcluster.stages.common import build  # noqa: E402

MODES = ("model", "device", "trainer", "cpu", "lightly")
TARGETS = {"device_img_s": 25_000.0, "device_over_lightly": 4.0, "device_over_model": 0.85,
           "trainer_img_s": 25_000.0, "trainer_over_lightly": 4.0, "trainer_over_model": 0.85}


# -- data ---------------------------------------------------------------------------------------------------

def synthetic_folder(n: int, size: int, root: Path) -> Path:
    """n random JPEG images (size x size) in 10 class folders under root/train; returns root."""
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(n):
        d = root / "train" / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=75)
    return root


def prepare_data(data: str | None, synthetic: int, size: int, work: Path) -> Path:
    """The image-folder root (with train/): a folder, an extracted .tar.gz, or synthetic images."""
    if data is None:
        return synthetic_folder(synthetic, size, work / "synthetic")
    p = Path(data).expanduser()
    if p.is_dir():
        return p
    if p.name.endswith((".tar.gz", ".tgz")):
        out = work / p.name.split(".")[0]
        if not (out / ".extracted").exists():
            out.mkdir(parents=True, exist_ok=True)
            with tarfile.open(p) as tar:
                tar.extractall(out, filter="data")
            (out / ".extracted").touch()
        tops = [c for c in out.iterdir() if c.is_dir()]
        return tops[0] if len(tops) == 1 and not (out / "train").is_dir() else out
    raise SystemExit(f"throughput: --data {data}: not a folder or .tar.gz")


# -- model and step -------------------------------------------------------------------------------------------

def build_model(args: argparse.Namespace, device: torch.device) -> tuple[SimCLR, torch.optim.Optimizer]:
    if args.backbone == "tiny":
        backbone = TinyCNN(in_channels=3, width=8, depth=2)
    else:
        backbone = ResNet(args.backbone, cifar_stem=args.cifar_stem, in_channels=3)
    model = SimCLR(backbone, batch_size_per_device=args.batch_size, temperature=0.2).to(device)
    apply_speed(model, {"channels_last": args.channels_last, "compile": args.compile,
                        "compile_mode": "default", "matmul_precision": "high" if device.type == "cuda" else None})
    opt = torch.optim.SGD(model.parameters(), lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    return model, opt


def make_step(model: SimCLR, opt: torch.optim.Optimizer, device: torch.device, bf16: bool,
              channels_last: bool) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    def step(views: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(views)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z0, z1 = model.project(x).chunk(2)
            loss = model.criterion(z0.float(), z1.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle(make: Callable[[], Iterable]) -> Iterator:
    while True:
        yield from make()


def timed(step: Callable, batches: Iterator[list[torch.Tensor]], warmup: int, steps: int, batch: int,
          device: torch.device) -> dict[str, float]:
    """Run ``warmup`` then ``steps`` steps; images/s over the timed ones, peak memory over all."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(next(batches))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(next(batches))
    _sync(device)
    dt = time.perf_counter() - t0
    out = {"img_s": steps * batch / dt, "seconds": dt, "loss": float(loss)}
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


# -- the modes ------------------------------------------------------------------------------------------------

class _StepTimer:
    """Lightning callback: wall time from the start of step ``warmup`` to the end of step ``warmup + steps``,
    the device synchronised at both ends (nothing else is synchronised)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        import pytorch_lightning as pl

        outer = self

        class Timer(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001
                if trainer.global_step == outer.warmup:
                    _sync(outer.device)
                    if outer.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(outer.device)
                    outer.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
                if trainer.global_step == outer.warmup + outer.steps:
                    _sync(outer.device)
                    outer.t1 = time.perf_counter()
                    outer.loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)

        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0 = self.t1 = float("nan")
        self.loss = float("nan")
        self.callback = Timer()


def trainer_mode(args: argparse.Namespace, root: Path, work: Path, device: torch.device) -> dict[str, float]:
    """The device path through ``sslcluster.stages.pretrain`` (Lightning), as ``python train.py`` runs it."""
    from sslcluster.stages.pretrain import pretrain
    from sslcluster.store.rundir import RunDir

    cuda = device.type == "cuda"
    backbone = (["backbone=tiny_cnn", "backbone.module.width=8", "backbone.module.depth=2"]
                if args.backbone == "tiny" else
                [f"backbone={args.backbone}", f"backbone.module.cifar_stem={str(args.cifar_stem).lower()}"])
    overrides = [
        "data=image_folder", f"data.source.root={root}", "augmentation=simclr", "method=simclr", *FIXED_DATA,
        f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}", "data.pipeline=device", f"data.device_cache.dir={work / 'cache'}",
        *backbone, f"trainer={'gpu' if cuda else 'cpu'}", f"trainer.accelerator={'gpu' if cuda else 'cpu'}",
        f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}",
        f"trainer.speed.channels_last={str(args.channels_last).lower()}",
        f"trainer.speed.compile={str(args.compile).lower()}", "trainer.max_epochs=1000",
        f"trainer.max_steps={args.warmup + args.steps}", "logger=none", "monitor.knn=false",
        "monitor.linear=false", f"run.root={work / 'runs'}",
    ]
    cfg = compose(overrides)
    run = RunDir.create(work / "runs", tag="throughput")
    timer = _StepTimer(args.warmup, args.steps, device)
    pretrain(cfg, run, callbacks=[timer.callback])
    dt = timer.t1 - timer.t0
    out = {"img_s": args.steps * args.batch_size / dt, "seconds": dt, "loss": timer.loss}
    if cuda:
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


#: the image folder's data settings fixed (CIFAR-10's), so no data-aware default is decided from the images: the
#: throughput of a given configuration is measured
FIXED_DATA = ["data.channels=3", "data.num_classes=10", "data.mean=[0.4914,0.4822,0.4465]",
              "data.std=[0.2470,0.2435,0.2616]", "data.cluster_split=test"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bf16 = args.precision == "bf16"
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sslcluster-throughput-"))
    root = prepare_data(args.data, args.synthetic, args.image_size, work)
    cfg = compose(["data=image_folder", f"data.source.root={root}", "augmentation=simclr", *FIXED_DATA,
                   f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
                   f"data.num_workers={args.workers}", "data.pipeline=cpu",
                   f"data.device_cache.dir={work / 'cache'}"])
    source = ImageFolderSource(str(root), "all")
    model, opt = build_model(args, device)
    step = make_step(model, opt, device, bf16, args.channels_last)
    b, s = args.batch_size, args.image_size
    results: dict[str, Any] = {"device": str(device), "gpu": torch.cuda.get_device_name(device)
                               if device.type == "cuda" else None, "images": len(source), "batch_size": b,
                               "image_size": s, "backbone": args.backbone, "precision": args.precision,
                               "channels_last": args.channels_last, "compile": args.compile,
                               "compile_augment": args.compile and not args.eager_augment,
                               "workers": args.workers, "modes": {}}

    def log(name: str, r: dict[str, float]) -> None:
        results["modes"][name] = r
        print(f"  {name:8s} {r['img_s']:10.1f} img/s" +
              (f"   peak {r['peak_mem_gb']:.2f} GB" if "peak_mem_gb" in r else ""), flush=True)

    print(f"throughput: {results['gpu'] or device}, {len(source)} images, batch {b}, {s}x{s}, {args.backbone}, "
          f"{args.precision}, channels_last={args.channels_last}, compile={args.compile}", flush=True)
    if "model" in args.modes:
        fixed = [torch.randn(b, 3, s, s, device=device) for _ in range(2)]
        log("model", timed(step, cycle(lambda: [fixed]), args.warmup, args.steps, b, device))
    if "device" in args.modes:
        t0 = time.perf_counter()
        cap = args.cache_side or DEFAULT_SIDE_FACTOR * s  # the device cache's cap on a long side
        arr, sizes, _, reused = load_or_build_cache(source, cap, 3, work / "cache", workers=max(1, args.workers))
        results["cache_shape"] = list(arr.shape)
        images = torch.from_numpy(np.array(arr, copy=True)).to(device)
        results["cache_s"] = time.perf_counter() - t0
        transform = from_views_config(cfg.augmentation.views).to(device)
        if args.compile and not args.eager_augment:
            transform.compile_apply()
        batches = DeviceBatches(images, b, seed=0, sizes=torch.from_numpy(sizes))

        def device_views() -> Iterator[list[torch.Tensor]]:
            for imgs, sz, _ in batches:
                with torch.no_grad():
                    views = transform(imgs, sizes=sz)
                yield views  # outside no_grad: the consumer's step runs while this generator is suspended

        log("device", timed(step, cycle(device_views), args.warmup, args.steps, b, device))
        del images
    if "trainer" in args.modes:
        log("trainer", trainer_mode(args, root, work, device))
    if "cpu" in args.modes:
        data = PretrainData(cfg, source)
        data.used = "cpu"
        loader = data.train_dataloader()
        pin = device.type == "cuda"

        def cpu_views() -> Iterator[list[torch.Tensor]]:
            for views, _ in loader:
                yield [v.to(device, non_blocking=pin) for v in views]

        log("cpu", timed(step, cycle(cpu_views), args.warmup, args.steps, b, device))
    if "lightly" in args.modes:
        from lightly.data import LightlyDataset
        from torch.utils.data import DataLoader

        transform = build(cfg.augmentation.views)  # lightly's SimCLRTransform, the same parameters
        ds = LightlyDataset(input_dir=str(root / "train"), transform=transform)
        loader = DataLoader(ds, batch_size=b, shuffle=True, drop_last=True, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

        def lightly_views() -> Iterator[list[torch.Tensor]]:
            for views, _, _ in loader:
                yield [v.to(device, non_blocking=True) for v in views]

        log("lightly", timed(step, cycle(lightly_views), args.warmup, args.steps, b, device))
    m = {k: v["img_s"] for k, v in results["modes"].items()}
    ratios = {}
    for a, c in (("device", "lightly"), ("device", "model"), ("device", "cpu"), ("cpu", "lightly"),
                 ("trainer", "lightly"), ("trainer", "model"), ("trainer", "device")):
        if a in m and c in m:
            ratios[f"{a}_over_{c}"] = m[a] / m[c]
            print(f"  {a}/{c}: {ratios[f'{a}_over_{c}']:.2f}", flush=True)
    results["ratios"] = ratios
    if device.type == "cuda" and ("device" in m or "trainer" in m):
        checks = {f"{k}_img_s": m[k] for k in ("device", "trainer") if k in m}
        checks.update(ratios)
        results["targets"] = {k: {"value": checks[k], "target": t, "met": checks[k] >= t}
                              for k, t in TARGETS.items() if k in checks}
        for k, v in results["targets"].items():
            print(f"  target {k} >= {v['target']}: {v['value']:.2f} {'met' if v['met'] else 'NOT met'}")
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="image folder (with train/) or .tar.gz of one; default: synthetic images")
    p.add_argument("--synthetic", type=int, default=512, help="number of synthetic images without --data")
    p.add_argument("--work-dir", help="where archives are extracted and the decoded cache is kept")
    p.add_argument("--backbone", default="resnet18", choices=["tiny", "resnet18", "resnet34", "resnet50"])
    p.add_argument("--cifar-stem", action="store_true")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the cpu and lightly modes")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the GPU augmentation")
    p.add_argument("--eager-augment", action="store_true", help="with --compile: leave the augmentation eager")
    p.add_argument("--cache-side", type=int, help="device mode: cap on a cached image's long side (default: 6 x "
                   "--image-size, as data.device_cache.max_side; --image-size itself: the old low-resolution cache)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", default=",".join(MODES), type=lambda s: [m for m in s.split(",") if m])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    bad = set(args.modes) - set(MODES)
    if bad:
        p.error(f"unknown mode(s) {', '.join(sorted(bad))}; valid: {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
