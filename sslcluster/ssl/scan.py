"""SCAN's recipe with the backbone (Van Gansbeke et al., "SCAN: Learning to Classify Images without Labels", ECCV
2020; reference: wvangansbeke/Unsupervised-Classification): the pieces the SCAN stage
(:mod:`sslcluster.stages.scan`) wires together.

1. :func:`sslcluster.clustering.heads.common.mine_neighbours`: the top-k neighbours of every train image by
   cosine similarity of the pretrained model's features, the image itself included (SCAN's ``utils/memory.py``).
2. :class:`SCANModule`: the pretrained backbone and ``num_heads`` linear heads trained together on (anchor,
   neighbour) image pairs (:class:`NeighborPairs`), both under SCAN's strong augmentation
   (:func:`strong_transform`), with the SCAN loss (:func:`sslcluster.clustering.heads.losses.scan_loss`); the head
   is chosen afterwards by its SCAN loss over the whole train graph (:func:`head_losses`), never by labels.
3. :class:`SelfLabelModule`: the chosen head's confident predictions (softmax above a threshold) on the weak view
   (the evaluation transform) are the targets of the strong view, with class-balanced cross-entropy
   (:func:`confidence_cross_entropy`).

No labels enter any of it: the datasets return images and row positions only.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslcluster.clustering.heads.losses import scan_loss
from sslcluster.data.sources import ImageSource
from sslcluster.errors import SSLClusterError

#: checkpoint entry holding the SCAN stage's settings (checked on resume) and the run config.
SCAN_CONFIG_KEY = "sslcluster_scan"


# -- augmentation ------------------------------------------------------------------------------------------

class Cutout:
    """Zero one square of a normalised image tensor (C, H, W), centred anywhere (clipped at the border), of a side
    drawn from 1..``length`` (SCAN's ``Cutout(n_holes=1, length, random=True)``). Written here: torchvision's
    ``RandomErasing`` draws rectangles by area and aspect and keeps them inside the image, a different
    distribution. Draws from torch's generator, which checkpoints keep."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise SSLClusterError(f"scan.augmentation.cutout_length={length} must be at least 1")
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """A copy of ``img`` (C, H, W) with one square zeroed."""
        h, w = img.shape[-2:]
        side = int(torch.randint(1, self.length + 1, ()).item())
        cy, cx = int(torch.randint(h, ()).item()), int(torch.randint(w, ()).item())
        y0, y1 = max(cy - side // 2, 0), min(cy + side // 2, h)
        x0, x1 = max(cx - side // 2, 0), min(cx + side // 2, w)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0.0
        return img

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class RandomMagnitudeRandAugment(T.RandAugment):
    """torchvision's RandAugment with a magnitude drawn uniformly from its bins for every image (SCAN's
    ``Augment`` draws a random strength for each operation; torchvision fixes one per transform)."""

    def forward(self, img: Any) -> Any:
        """One image, ``num_ops`` operations at a random magnitude."""
        self.magnitude = int(torch.randint(self.num_magnitude_bins, ()).item())
        return super().forward(img)


def strong_transform(image_size: int, mean: Sequence[float], std: Sequence[float], num_ops: int = 4,
                     magnitude: int | None = None, hflip: float = 0.5, cutout_length: int | None = None) -> T.Compose:
    """SCAN's strong augmentation (``augmentation_strategy: ours`` of its configs): resize and centre-crop to
    ``image_size`` (the evaluation transform's geometry; SCAN's ``RandomCrop(32)`` of a 32 px image crops nothing),
    horizontal flip with probability ``hflip``, ``num_ops`` RandAugment operations (torchvision; ``magnitude``
    None: a random one per image), to a normalised tensor (C, H, W), then Cutout of a random side up to
    ``cutout_length`` (None: half the image side, SCAN's 16 of CIFAR-10's 32 px)."""
    if num_ops < 0:
        raise SSLClusterError(f"scan.augmentation.num_ops={num_ops} must be >= 0")
    ops: list[Callable] = [T.Resize(image_size), T.CenterCrop(image_size)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if num_ops > 0:
        ops.append(RandomMagnitudeRandAugment(num_ops=num_ops) if magnitude is None
                   else T.RandAugment(num_ops=num_ops, magnitude=int(magnitude)))
    ops += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    length = cutout_length if cutout_length is not None else max(1, image_size // 2)
    if length:
        ops.append(Cutout(int(length)))
    return T.Compose(ops)


# -- datasets ----------------------------------------------------------------------------------------------

class NeighborPairs(Dataset):
    """Item i: ``(anchor, neighbour, i)``, image i and one of its mined neighbours (drawn uniformly from its row of
    ``neighbors``, itself included, as SCAN's ``NeighborsDataset``), each through ``transform`` (C, H, W)."""

    def __init__(self, source: ImageSource, neighbors: np.ndarray, transform: Callable) -> None:
        if len(neighbors) != len(source):
            raise SSLClusterError(f"{len(neighbors)} neighbour rows for {len(source)} train images")
        self.source, self.neighbors, self.transform = source, neighbors, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        row = self.neighbors[i]
        j = int(row[int(torch.randint(len(row), ()).item())])
        return self.transform(self.source.load(i)), self.transform(self.source.load(j)), i


class WeakStrong(Dataset):
    """Item i: ``(weak, strong, i)``, image i through the evaluation transform and through the strong one (SCAN's
    ``AugmentedDataset`` for self-labelling)."""

    def __init__(self, source: ImageSource, weak: Callable, strong: Callable) -> None:
        self.source, self.weak, self.strong = source, weak, strong

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        img = self.source.load(i)
        return self.weak(img), self.strong(img), i


# -- model -------------------------------------------------------------------------------------------------

class ClusteringModel(nn.Module):
    """A backbone (images (B, C, H, W) -> (B, D), with ``out_dim``) and ``num_heads`` linear heads D -> K (SCAN's
    ``ClusteringModel``). ``forward`` returns the logits of every head (H, B, K)."""

    def __init__(self, backbone: nn.Module, num_clusters: int, num_heads: int = 1) -> None:
        super().__init__()
        if num_clusters < 2:
            raise SSLClusterError(f"scan.num_clusters={num_clusters} must be at least 2")
        if num_heads < 1:
            raise SSLClusterError(f"scan.num_heads={num_heads} must be at least 1")
        self.backbone = backbone
        dim = int(backbone.out_dim)  # every backbone of sslcluster.ssl.backbones declares it
        self.heads = nn.ModuleList([nn.Linear(dim, num_clusters) for _ in range(num_heads)])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (H, B, K) of backbone features (B, D)."""
        return torch.stack([head(features) for head in self.heads])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (H, B, K) of images (B, C, H, W)."""
        return self.logits(self.backbone(x))

    def keep_head(self, head: int) -> None:
        """Keep only head ``head`` (self-labelling trains the chosen one)."""
        self.heads = nn.ModuleList([self.heads[head]])


class _ScanBase(pl.LightningModule):
    """What both steps share: the model, Adam (SCAN's optimiser: constant rate), the settings in checkpoints."""

    def __init__(self, model: ClusteringModel, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        #: saved into every checkpoint (:data:`SCAN_CONFIG_KEY`), compared on resume
        self.settings: dict[str, Any] = {}

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""
        return list(self.model.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam at a constant rate (SCAN's ``optimizer: adam``, ``scheduler: constant``)."""
        return torch.optim.Adam(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the stage's settings in the checkpoint."""
        checkpoint[SCAN_CONFIG_KEY] = self.settings


class SCANModule(_ScanBase):
    """SCAN's step 2: backbone and heads on (anchor, neighbour) pairs, every head's SCAN loss summed (SCAN's
    ``scan_train``). ``update_cluster_head_only``: the backbone runs without gradients and only the heads train.
    Logs ``train/total``, ``train/consistency``, ``train/entropy`` (mean over heads) per step and epoch."""

    def __init__(self, model: ClusteringModel, lr: float = 1e-4, weight_decay: float = 1e-4,
                 entropy_weight: float = 5.0, update_cluster_head_only: bool = False) -> None:
        super().__init__(model, lr, weight_decay)
        if entropy_weight < 0:
            raise SSLClusterError(f"scan.entropy_weight={entropy_weight} must be >= 0")
        self.entropy_weight = float(entropy_weight)
        self.update_cluster_head_only = bool(update_cluster_head_only)

    def trainable(self) -> list[nn.Parameter]:
        """The heads only when ``update_cluster_head_only``, else every parameter."""
        return list(self.model.heads.parameters()) if self.update_cluster_head_only else super().trainable()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Sum over heads of the SCAN loss of anchors (B, C, H, W) and neighbours (B, C, H, W)."""
        anchors, neighbors, _ = batch
        b = anchors.shape[0]
        if self.update_cluster_head_only:
            with torch.no_grad():
                features = self.model.backbone(torch.cat([anchors, neighbors]))
            logits = self.model.logits(features)
        else:
            logits = self.model(torch.cat([anchors, neighbors]))  # one pass: (H, 2B, K)
        total, consistency, entropy = scan_loss(logits[:, :b], logits[:, b:], self.entropy_weight)  # (H,) each
        for name, value in (("total", total), ("consistency", consistency), ("entropy", entropy)):
            self.log(f"train/{name}", value.mean(), on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        return total.sum()


def confidence_cross_entropy(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float = 0.99,
                             balance: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """SCAN's self-labelling loss (``ConfidenceBasedCE``) of weak-view logits (B, K) (the targets, no gradient)
    and strong-view logits (B, K): cross-entropy of the strong view towards the weak view's argmax over the
    images whose weak softmax maximum exceeds ``threshold``; with ``balance`` each class weighted by the inverse
    of its share of the confident targets (classes without one weigh 1), a weighted mean. Returns ``(loss,
    number of confident images)``; no confident image gives a zero loss (SCAN raises instead). Written here: no
    maintained library has it."""
    with torch.no_grad():
        prob = F.softmax(weak_logits.detach().float(), dim=1)
        confidence, target = prob.max(dim=1)
        mask = confidence > threshold
    n = int(mask.sum())
    if n == 0:
        return strong_logits.sum() * 0.0, mask.sum()
    target = target[mask]
    weight = None
    if balance:
        classes, counts = torch.unique(target, return_counts=True)
        weight = torch.ones(strong_logits.shape[1], dtype=strong_logits.dtype, device=strong_logits.device)
        weight[classes] = (n / counts.to(strong_logits.dtype))
    return F.cross_entropy(strong_logits[mask], target, weight=weight), mask.sum()


class SelfLabelModule(_ScanBase):
    """SCAN's step 3: the model keeps one head; the weak view's confident predictions (no gradient) train the
    strong view (SCAN's ``selflabel_train``). Logs ``train/loss`` and ``train/confident`` (the fraction of images
    above the threshold) per epoch."""

    def __init__(self, model: ClusteringModel, lr: float = 1e-4, weight_decay: float = 1e-4,
                 confidence_threshold: float = 0.99, class_balance: bool = True) -> None:
        super().__init__(model, lr, weight_decay)
        if not 0.0 <= confidence_threshold < 1.0:
            raise SSLClusterError(f"scan.selflabel.confidence_threshold={confidence_threshold} must be in [0, 1)")
        if len(model.heads) != 1:
            raise SSLClusterError("self-labelling trains one head; keep_head() first")
        self.threshold, self.balance = float(confidence_threshold), bool(class_balance)
        # the step is made here (no step on a batch without a target), which Lightning's automatic optimisation
        # cannot do under DDP
        self.automatic_optimization = False

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Confidence-based cross-entropy of weak views (B, C, H, W) and strong views (B, C, H, W)."""
        weak, strong, _ = batch
        with torch.no_grad():
            target_logits = self.model(weak)[0]
        loss, confident = confidence_cross_entropy(target_logits, self.model(strong)[0], self.threshold,
                                                   self.balance)
        b = weak.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        self.log("train/confident", confident.float() / b, on_step=False, on_epoch=True, batch_size=b,
                 sync_dist=True)
        # no target on any process: no optimiser step (SCAN raises here), so that Adam's weight decay alone never
        # moves the weights; every process decides alike (a step on some ranks only would desynchronise DDP)
        anywhere = confident if self.trainer.world_size == 1 else self.all_gather(confident).sum()
        if int(anywhere) > 0:
            optimizer = self.optimizers()
            optimizer.zero_grad()  # type: ignore[union-attr]
            self.manual_backward(loss)
            optimizer.step()  # type: ignore[union-attr]
        return loss.detach()


# -- evaluation passes (label-free) --------------------------------------------------------------------------

@torch.no_grad()
def all_logits(model: ClusteringModel, dataset: Dataset, batch_size: int, device: torch.device,
               num_workers: int = 0) -> torch.Tensor:
    """Logits (H, N, K) of every image of ``dataset`` (items ``(image, i)``, the evaluation transform), in eval
    mode, on the CPU."""
    model.to(device).eval()
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        out.append(model(x.to(device)).float().cpu())
    return torch.cat(out, dim=1)


def head_losses(logits: torch.Tensor, neighbors: np.ndarray, entropy_weight: float) -> dict[str, list[float]]:
    """Every head's SCAN loss over the whole train graph (SCAN's ``scan_evaluate``): consistency over every
    (image, mined neighbour) pair of ``neighbors`` (N, k + 1), entropy of the mean prediction of all N images
    (each image is an anchor k + 1 times, so the pairs' mean equals it). ``logits`` (H, N, K)."""
    n, m = neighbors.shape
    anchors = torch.arange(n).repeat_interleave(m)
    pairs = torch.from_numpy(np.ascontiguousarray(neighbors)).reshape(-1)
    total, consistency, entropy = scan_loss(logits[:, anchors], logits[:, pairs], entropy_weight)
    return {"total": total.tolist(), "consistency": consistency.tolist(), "entropy": entropy.tolist()}


def choose_head(model: ClusteringModel, dataset: Dataset, neighbors: np.ndarray, entropy_weight: float,
                batch_size: int, device: torch.device, num_workers: int = 0
                ) -> tuple[int, torch.Tensor, dict[str, list[float]]]:
    """SCAN's head choice (never labels): the head with the lowest SCAN loss over the train graph. ``dataset``: the
    train images under the evaluation transform, in ``neighbors``' row order. Returns the head, the logits
    (H, N, K) and every head's loss terms."""
    logits = all_logits(model, dataset, batch_size, device, num_workers)
    losses = head_losses(logits, neighbors, entropy_weight)
    return int(np.argmin(losses["total"])), logits, losses


class EpochCurve(pl.Callback):
    """One row per training epoch: the epoch's logged means (``train/*``), wall seconds and images per second
    (every image the step's forward pass reads: 2 per pair). Kept in checkpoints, so a resumed run's curve has
    every epoch."""

    def __init__(self, images_per_item: int = 2) -> None:
        self.rows: list[dict[str, Any]] = []
        self.images_per_item = images_per_item
        self._t0 = 0.0
        self._items = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch's clock."""
        self._t0, self._items = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Count the batch's items."""
        self._items += len(batch[-1]) * trainer.world_size  # the row positions (B,) end every batch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Append the epoch's row."""
        seconds = time.perf_counter() - self._t0
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        for name, value in trainer.callback_metrics.items():
            if name.startswith("train/"):
                row[name.split("/", 1)[1]] = float(value)
        images = self._items * self.images_per_item
        row.update({"seconds": seconds, "images": images,
                    "images_per_s": images / seconds if seconds > 0 else math.nan})
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        """The rows so far, for the checkpoint."""
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the rows of a resumed run."""
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
