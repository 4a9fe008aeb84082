"""Helpers shared by the SSL tests: tiny overrides, a synthetic image folder, per-epoch training losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image, ImageDraw

from sslcluster.config import compose, config_dir
from sslcluster.stages.pretrain import pretrain
from sslcluster.store.rundir import RunDir

#: every method of the config tree (configs/method/<name>.yaml): a new method is tested without editing a list.
METHODS = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))


def augmentation_for(method: str) -> str:
    """The colour-image augmentation config named after ``method``, else SimCLR's views."""
    return method if (config_dir() / "augmentation" / f"{method}.yaml").is_file() else "simclr"


TINY = ["backbone.module.width=8", "backbone.module.depth=2", "logger=none", "monitor.knn=false",
        "monitor.linear=false"]


class EpochLosses(pl.Callback):
    """Records the epoch mean of ``train/loss`` after every training epoch, and, for two-view methods, the fraction
    of the first batch's images whose two views differ (identical views would make the loss drop too)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.views_differ: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        views = batch[0]
        if self.views_differ is None and isinstance(views, (list, tuple)) and len(views) >= 2:
            diff = (views[0].float() - views[1].float()).flatten(1).abs().amax(1)
            self.views_differ = float((diff > 1e-6).float().mean())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


def train_losses(root: Path, overrides: list[str], key: str = "r", tiny: bool = True,
                 recorder: EpochLosses | None = None) -> tuple[list[float], Path]:
    """Pretrain with ``overrides`` (after :data:`TINY` when ``tiny``) into ``root/key``; the per-epoch mean losses
    and the last checkpoint (``recorder``: the callback to use, e.g. to read ``views_differ`` after)."""
    cfg = compose([f"run.root={root}", *(TINY if tiny else []), *overrides])
    run = RunDir.create(root, key)
    rec = recorder or EpochLosses()
    ckpt = pretrain(cfg, run, callbacks=[rec])
    return rec.losses, ckpt


def make_image_folder(root: Path, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """``root/{train,test}/<shape>/NNN.png``: 3 classes of upright shapes that no rotation maps onto themselves
    (triangle pointing up, an L, a T) in random colours, places and sizes, on a background lit from above."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 3))):
        for shape in ("triangle", "ell", "tee"):
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sky = np.linspace(200, 40, size)[:, None, None] * rng.uniform(0.6, 1.0, (1, 1, 3))
                bg = np.clip(sky + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(bg, (size, size, 3))))
                d = ImageDraw.Draw(img)
                r = int(rng.integers(size // 5, size // 3))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                w = max(1, r // 2)
                if shape == "triangle":
                    d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                elif shape == "ell":
                    d.rectangle([cx - r, cy - r, cx - r + w, cy + r], fill=colour)
                    d.rectangle([cx - r, cy + r - w, cx + r, cy + r], fill=colour)
                else:
                    d.rectangle([cx - r, cy - r, cx + r, cy - r + w], fill=colour)
                    d.rectangle([cx - w // 2, cy - r, cx + w // 2 + 1, cy + r], fill=colour)
                img.save(folder / f"{i:03d}.png")
    return root
