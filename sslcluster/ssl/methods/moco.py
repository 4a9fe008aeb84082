"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"; Chen et al. 2020,
"Improved Baselines with Momentum Contrastive Learning").

A query encoder (backbone + 2-layer MLP head) is trained with InfoNCE against the key of the other view, computed
by a momentum encoder (an exponential moving average of the query encoder, lightly's ``update_momentum``; the
momentum is constant, 0.999 in MoCo v2, or, with ``momentum_end`` set, raised from ``momentum`` to ``momentum_end``
on BYOL's cosine schedule, lightly's ``cosine_schedule``), and against a queue of past keys (lightly's memory bank
inside ``NTXentLoss``).

Shuffle BN (He et al. 2020, section 3.3): BatchNorm statistics shared by a query and its key would let the model
find the positive from them. Permuting one device's batch leaves its statistics unchanged, so on its own it blocks
nothing; the BatchNorm layers of both encoders therefore normalise sub-batches apart (``query_bn_splits`` of the
query batch, ``key_bn_splits`` of the shuffled key batch; 8 each, as lightly's CIFAR-10 benchmark model and MoCo's
CIFAR demo, which simulate the per-GPU BatchNorm of MoCo's 8-GPU runs on one device), on one device and under DDP
alike: a key's statistics come from another set of images than its query's. Under DDP the keys are also shuffled
across ranks (lightly's ``batch_shuffle_distributed``), and the split layers are never synchronised
(``trainer.sync_batchnorm`` converts only a query encoder left unsplit, ``query_bn_splits=1``; see
:class:`SplitBatchNorm`). The memory bank gathers the keys of every rank before enqueueing them, so all ranks hold the
same queue. The queue must then be a multiple of the global batch (per-device batch x ranks), so that a step's keys
never wrap around its end.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_shuffle_distributed, batch_unshuffle, batch_unshuffle_distributed
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.momentum import MomentumEncoder
from sslcluster.ssl.methods.twoview import two_views
from sslcluster.ssl.optim import OptimConfig

QUEUE_KEY = "sslcluster_moco_queue"


class SplitBatchNorm(nn.Module):
    """BatchNorm over sub-batches: in training, each of ``splits`` contiguous sub-batches (B/splits, C, ...) is
    normalised with its own statistics; in eval, the running statistics.

    As lightly's ``SplitBatchNorm`` (its CIFAR-10 benchmark's MoCo model) and MoCo's CIFAR demo's ``SplitBatchNorm``
    do, the sub-batches are normalised in one ``F.batch_norm`` call (the sub-batches laid side by side as
    ``splits x C`` channels) and the running statistics move once per forward pass, towards the mean of the
    sub-batches' statistics: they are the statistics export and the monitors use for the query encoder.

    Written here rather than taken from lightly because lightly's subclasses ``nn.BatchNorm2d``:
    ``trainer.sync_batchnorm=true`` (torch's ``SyncBatchNorm.convert_sync_batchnorm``, which converts every
    ``_BatchNorm``) would turn it into a SyncBatchNorm and share the statistics across ranks, undoing the key
    batch's shuffle. This class is not a ``_BatchNorm``, so the conversion leaves it alone. It takes over the
    parameters and buffers of the layer it replaces, under the same names (checkpoints load either way), and works
    for any input rank (BatchNorm1d/2d/3d).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, splits: int) -> None:
        super().__init__()
        if splits < 1:
            raise SSLClusterError(f"method.module.key_bn_splits / query_bn_splits={splits} must be at least 1")
        self.splits, self.eps, self.momentum = splits, bn.eps, bn.momentum
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, C, ...); B a multiple of ``splits`` in training."""
        tracked = self.running_mean is not None
        if not self.training:  # running statistics (or, untracked, the whole batch's as nn.BatchNorm does)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, not tracked, 0.0,
                                self.eps)
        s, (b, c), rest = self.splits, x.shape[:2], x.shape[2:]
        if b % s:
            raise SSLClusterError(f"a batch of {b} images cannot be split into {s} BatchNorm sub-batches "
                                  "(method.module.key_bn_splits / query_bn_splits must divide data.batch_size)")
        # (B, C, ...) -> (B/s, s*C, ...): channel block j holds sub-batch j (rows j*B/s .. (j+1)*B/s - 1)
        side = x.reshape(s, b // s, c, *rest).transpose(0, 1).reshape(b // s, s * c, *rest)
        mean = var = None
        factor = 0.0
        if tracked:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        weight = None if self.weight is None else self.weight.repeat(s)
        bias = None if self.bias is None else self.bias.repeat(s)
        out = F.batch_norm(side, mean, var, weight, bias, True, factor, self.eps)
        if mean is not None and var is not None:  # one update per pass: the mean over the sub-batches' copies
            with torch.no_grad():
                self.running_mean.copy_(mean.view(s, c).mean(0))
                self.running_var.copy_(var.view(s, c).mean(0))
        return out.reshape(b // s, s, c, *rest).transpose(0, 1).reshape(b, c, *rest)


def split_batchnorm(module: nn.Module, splits: int) -> int:
    """Replace every BatchNorm of ``module`` by a :class:`SplitBatchNorm` of ``splits`` sub-batches, in place;
    returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, SplitBatchNorm(child, splits))
            count += 1
        else:
            count += split_batchnorm(child, splits)
    return count


class MoCo(MomentumEncoder):
    """Args: see :class:`SSLMethod`; ``temperature`` of InfoNCE; ``queue_size`` negatives; ``momentum`` of the key
    encoder's EMA (constant; with ``momentum_end`` set, raised to it on a cosine); projection head sizes;
    ``shuffle_bn`` (shuffle the key batch), ``key_bn_splits`` and ``query_bn_splits`` (sub-batches of the key and
    query encoders' BatchNorm; ``query_bn_splits=None``: as ``key_bn_splits``; 1: the query encoder keeps torch's
    BatchNorm, which ``trainer.sync_batchnorm`` converts)."""

    def __init__(self, backbone: nn.Module, optim: OptimConfig | dict[str, Any] | None = None,
                 batch_size_per_device: int = 256, temperature: float = 0.2, queue_size: int = 4096,
                 momentum: float = 0.999, momentum_end: float | None = None, hidden_dim: int = 2048,
                 output_dim: int = 128, shuffle_bn: bool = True, key_bn_splits: int = 8,
                 query_bn_splits: int | None = None, gather_distributed: bool = True) -> None:
        super().__init__(backbone, optim, batch_size_per_device)
        if temperature <= 0:
            raise SSLClusterError(f"method.module.temperature={temperature} must be positive")
        if queue_size < 1:
            raise SSLClusterError(f"method.module.queue_size={queue_size} must be positive")
        self.queue_size = queue_size
        self.shuffle_bn = shuffle_bn
        query_bn_splits = key_bn_splits if query_bn_splits is None else query_bn_splits
        for key, splits in (("key_bn_splits", key_bn_splits), ("query_bn_splits", query_bn_splits)):
            if splits < 1 or batch_size_per_device % splits:
                raise SSLClusterError(f"method.module.{key}={splits} must divide data.batch_size="
                                      f"{batch_size_per_device}")
        self.key_bn_splits, self.query_bn_splits = key_bn_splits, query_bn_splits
        self.check_queue(1)
        self.projection_head = MoCoProjectionHead(backbone.out_dim, hidden_dim, output_dim)
        self.init_momentum(["backbone", "projection_head"], momentum, momentum_end)
        for encoder in (self.backbone_momentum, self.projection_head_momentum):
            split_batchnorm(encoder, key_bn_splits)
        if query_bn_splits > 1:  # both encoders split, as lightly's CIFAR-10 benchmark and MoCo's CIFAR demo
            for encoder in (self.backbone, self.projection_head):
                split_batchnorm(encoder, query_bn_splits)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, output_dim),
                                    gather_distributed=gather_distributed)

    # -- the queue ---------------------------------------------------------------------------------------------
    def check_queue(self, world_size: int) -> None:
        """Refuse a queue that is not a multiple of the global batch (keys enqueued per step)."""
        global_batch = self.batch_size_per_device * world_size
        if self.queue_size % global_batch != 0:
            raise SSLClusterError(
                f"method.module.queue_size={self.queue_size} is not a multiple of the global batch {global_batch} "
                f"(data.batch_size={self.batch_size_per_device} x {world_size} devices); "
                f"use e.g. {max(1, self.queue_size // global_batch) * global_batch}")

    @property
    def queue(self) -> torch.Tensor:
        """The queue of keys (queue_size, output_dim), L2-normalised."""
        return self.criterion.memory_bank.bank

    def setup(self, stage: str) -> None:
        """Check the queue size against the number of devices."""
        self.check_queue(self.trainer.world_size)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the run config and the negative queue (bank (Q, D) and pointer) into the checkpoint."""
        # lightly keeps the bank out of the state dict (non-persistent buffers); keep it for exact resumes.
        super().on_save_checkpoint(checkpoint)
        bank = self.criterion.memory_bank
        checkpoint[QUEUE_KEY] = {"bank": bank.bank.detach().cpu().clone(), "ptr": bank.bank_ptr.detach().cpu().clone()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the negative queue saved by :meth:`on_save_checkpoint`, if present."""
        state = checkpoint.get(QUEUE_KEY)
        if state is not None:
            bank = self.criterion.memory_bank
            bank.bank.copy_(state["bank"])
            bank.bank_ptr.copy_(state["ptr"])

    # -- encoders ----------------------------------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Query projections (B, output_dim) of images (B, C, H, W)."""
        return self.projection_head(self.backbone(x))

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Momentum encoder; its BatchNorm layers normalise ``key_bn_splits`` sub-batches apart (SplitBatchNorm)."""
        return self.projection_head_momentum(self.backbone_momentum(x))

    @torch.no_grad()
    def project_momentum(self, x: torch.Tensor) -> torch.Tensor:
        """Keys (B, output_dim) from the momentum encoder.

        With ``shuffle_bn`` the key batch is shuffled (across all ranks under DDP) before the encoder, whose
        BatchNorm layers normalise ``key_bn_splits`` sub-batches apart: a key's statistics come from a random
        subset of the batch, not from the set its query was normalised with (He et al. 2020, section 3.3).
        """
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        if not self.shuffle_bn:
            return self._keys(x)
        if distributed:
            x, shuffle = batch_shuffle_distributed(x)
            return batch_unshuffle_distributed(self._keys(x), shuffle)
        x, shuffle = batch_shuffle(x)
        return batch_unshuffle(self._keys(x), shuffle)

    def training_step(self, batch: tuple[Sequence[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        """MoCo v2 loss of one batch: two views (B, C, H, W) each -> scalar loss."""
        x_q, x_k = two_views(batch, "moco")
        self.step_momentum()
        q = self.project(x_q)
        k = self.project_momentum(x_k)
        # InfoNCE: positive = own key, negatives = the queue (before this step's keys are enqueued).
        loss = self.criterion(q, k)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x_q.shape[0])
        return loss
