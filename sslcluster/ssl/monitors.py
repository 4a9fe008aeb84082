"""Online monitors: how good are the backbone's features *during* pretraining, measured with held-out labels.

Both work on detached backbone features of labeled images seen through the deterministic evaluation transform, in
a loader of their own (the training loader stays label-free), every ``every_n_epochs`` epochs:

- kNN (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"): weighted
  k-nearest-neighbour vote (k=200, temperature 0.1, cosine similarity) of the test features against the
  labeled train features as bank, lightly's ``knn_predict``; logs ``monitor/knn_top1``.
- Linear probe: a linear classifier with its own optimiser (SGD), trained on the train features for a few epochs
  at each check and kept between checks, scored on the test features; logs ``monitor/linear_top1``.

The evaluation transform is deterministic, so its outputs are computed once and kept on the training device when
both splits fit ``cache_gb`` (CIFAR-10's 2 x 10,000 images: 0.25 GB): later checks are a forward pass over
device tensors, with no decoding (the checks cost seconds each otherwise, minutes over a 200-epoch GPU run).
Features are computed under the trainer's precision context (bf16 autocast under ``bf16-mixed``), as Lightning
does for validation.

Labels serve monitoring only; both switch off (``monitor.knn=false``, ``monitor.linear=false``) and switch
themselves off when a split has no labels. Every rank computes the same numbers on the same images (no
collectives); only rank 0 logs them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from torch import nn
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


@dataclass
class MonitorConfig:
    """Settings of :class:`OnlineMonitors` (``monitor.*`` in the config)."""

    knn: bool = True
    linear: bool = True
    every_n_epochs: int = 1
    knn_k: int = 200
    knn_t: float = 0.1
    linear_epochs: int = 10
    linear_lr: float = 0.1
    max_images: int = 10000      # per split, a fixed random subset above this
    batch_size: int = 512
    num_workers: int = 0         # loader processes (the run sets data.num_workers)
    cache_gb: float = 2.0        # keep both splits' transformed images on the device when they fit (0: never)


class LabeledImages(Dataset):
    """``(image (C, H, W), label)`` of an image source through a transform, restricted to ``indices``."""

    def __init__(self, source: Any, transform: Any, indices: np.ndarray) -> None:
        self.source, self.transform, self.indices = source, transform, indices
        self.labels = torch.as_tensor(np.asarray(source.labels)[indices], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.source.load(int(self.indices[i]))), int(self.labels[i])


def labeled_subset(source: Any, max_images: int, seed: int = 0) -> np.ndarray | None:
    """Positions of the labeled images of ``source`` (at most ``max_images``, a fixed subset), or None."""
    labels = getattr(source, "labels", None)
    if labels is None:
        return None
    idx = np.flatnonzero(np.asarray(labels) >= 0)
    if len(idx) == 0:
        return None
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    return idx


class OnlineMonitors(pl.Callback):
    """kNN and linear-probe monitors on detached backbone features (see the module docstring).

    Args:
        train: labeled train split (the kNN bank, the probe's training set).
        test: labeled test split (what is scored).
        num_classes: number of classes of the labels.
        cfg: settings.
    """

    def __init__(self, train: LabeledImages, test: LabeledImages, num_classes: int,
                 cfg: MonitorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MonitorConfig()
        self.train, self.test, self.num_classes = train, test, num_classes
        self.probe: nn.Linear | None = None
        self.probe_optimizer: torch.optim.Optimizer | None = None
        self._probe_state: dict[str, Any] | None = None
        self.last: dict[str, float] = {}
        self._inputs: dict[int, torch.Tensor] = {}
        self._fits: bool | None = None

    def inputs(self, data: LabeledImages, device: torch.device) -> torch.Tensor | None:
        """The transformed images (N, C, H, W) of ``data`` on ``device``, computed at the first call and kept, when
        both splits together fit ``cache_gb``; None otherwise (then :meth:`features` streams them)."""
        key = id(data)
        if key in self._inputs:
            return self._inputs[key]
        if self._fits is None:
            first = data[0][0]
            per_image = first.numel() * first.element_size()
            self._fits = (len(self.train) + len(self.test)) * per_image <= self.cfg.cache_gb * 1e9
        if not self._fits:
            return None
        self._inputs[key] = torch.cat([x for x, _ in self._loader(data)]).to(device)
        return self._inputs[key]

    def _loader(self, data: LabeledImages) -> DataLoader:
        """In order, with a generator of its own: iterating a DataLoader draws its workers' base seed from the
        global generator otherwise, and monitoring would change training's random stream (its augmentations)."""
        return DataLoader(data, batch_size=self.cfg.batch_size, shuffle=False, num_workers=self.cfg.num_workers,
                          generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def features(self, backbone: nn.Module, data: LabeledImages, device: torch.device,
                 context: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> torch.Tensor:
        """Backbone features (N, D) of ``data`` in order, in eval mode, without gradients, in float32."""
        kept = self.inputs(data, device)
        if kept is not None:
            batches: Iterable[torch.Tensor] = kept.split(self.cfg.batch_size)
        else:
            batches = (x.to(device) for x, _ in self._loader(data))
        # A backbone compiled in place (trainer.speed.compile) is run eagerly here: its compiled graph is for the
        # training batch in train mode; eval mode and other batch sizes would each cost a recompilation (tens of
        # seconds on a GPU, at every check until dynamo gives up), for a pass that is cheap eagerly.
        forward = backbone.forward if getattr(backbone, "_compiled_call_impl", None) is not None else backbone
        out = []
        for x in batches:
            with context():
                out.append(forward(x).float())
        return torch.cat(out)

    def knn_top1(self, train_f: torch.Tensor, test_f: torch.Tensor) -> float:
        """Top-1 accuracy of the weighted kNN vote of test features (M, D) against train features (N, D)."""
        bank = F.normalize(train_f, dim=1).t().contiguous()  # (D, N), as knn_predict wants
        labels = self.train.labels.to(train_f.device)
        k = min(self.cfg.knn_k, bank.shape[1])
        pred = knn_predict(F.normalize(test_f, dim=1), bank, labels, self.num_classes, k, self.cfg.knn_t)
        return (pred[:, 0] == self.test.labels.to(test_f.device)).float().mean().item()

    def linear_top1(self, train_f: torch.Tensor, test_f: torch.Tensor, seed: int) -> float:
        """Train the probe ``linear_epochs`` epochs on (N, D) train features, score it on (M, D) test features."""
        device = train_f.device
        if self.probe is None:
            with torch.random.fork_rng(devices=[]):  # its initialisation must not move training's generator
                torch.manual_seed(seed)
                self.probe = nn.Linear(train_f.shape[1], self.num_classes).to(device)
            self.probe_optimizer = torch.optim.SGD(self.probe.parameters(), lr=self.cfg.linear_lr, momentum=0.9,
                                                   weight_decay=0.0)
            if self._probe_state is not None:
                self.probe.load_state_dict(self._probe_state["probe"])
                self.probe_optimizer.load_state_dict(self._probe_state["optimizer"])
        assert self.probe_optimizer is not None
        # Standardise with the train statistics: the features' scale drifts during pretraining.
        mean, std = train_f.mean(0), train_f.std(0) + 1e-6
        xtr, xte = (train_f - mean) / std, (test_f - mean) / std
        ytr = self.train.labels.to(device)
        gen = torch.Generator().manual_seed(seed)  # its own generator: monitoring never moves training's RNG
        with torch.enable_grad():
            for _ in range(self.cfg.linear_epochs):
                for idx in torch.randperm(len(xtr), generator=gen).split(256):
                    idx = idx.to(device)
                    loss = F.cross_entropy(self.probe(xtr[idx]), ytr[idx])
                    self.probe_optimizer.zero_grad()
                    loss.backward()
                    self.probe_optimizer.step()
        with torch.no_grad():
            return (self.probe(xte).argmax(1) == self.test.labels.to(device)).float().mean().item()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every ``every_n_epochs`` epochs, score the backbone by kNN and/or linear probe; log top-1 accuracy."""
        if not (self.cfg.knn or self.cfg.linear) or (trainer.current_epoch + 1) % self.cfg.every_n_epochs:
            return
        backbone: nn.Module = pl_module.backbone  # type: ignore[assignment]
        was_training = backbone.training
        backbone.eval()
        plugin = getattr(trainer, "precision_plugin", None)
        context = plugin.forward_context if plugin is not None else contextlib.nullcontext
        try:
            train_f = self.features(backbone, self.train, pl_module.device, context)
            test_f = self.features(backbone, self.test, pl_module.device, context)
        finally:
            backbone.train(was_training)
        metrics: dict[str, float] = {}
        if self.cfg.knn:
            metrics["monitor/knn_top1"] = self.knn_top1(train_f, test_f)
        if self.cfg.linear:
            metrics["monitor/linear_top1"] = self.linear_top1(train_f, test_f, seed=trainer.current_epoch)
        self.last = metrics
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, rank_zero_only=True)
        log.info("epoch %d: %s", trainer.current_epoch,
                 ", ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in metrics.items()))

    def state_dict(self) -> dict[str, Any]:
        """The linear probe's and its optimiser's state, or an empty dict before the first probe."""
        if self.probe is None or self.probe_optimizer is None:
            return {}
        return {"probe": self.probe.state_dict(), "optimizer": self.probe_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the probe state to restore when the probe is next built."""
        self._probe_state = state_dict or None
