"""Lightning callbacks that keep a training run honest.

- :class:`NonFiniteLossGuard` stops training at the first NaN or inf loss, before that loss reaches the weights,
  with a message naming the step; the checkpoints written so far (``last.ckpt``: the last good one) stay as
  they are.
- :class:`SkippedFilesReport` records the train split's skipped files in the run directory when training starts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from sslcluster.errors import SSLClusterError


class NonFiniteLossGuard(pl.Callback):
    """Raise :class:`SSLClusterError` when the training loss is NaN or inf (checked before ``backward``, so the
    bad step never updates the weights).

    Args:
        checkpoints_dir: where the run's checkpoints are, to name the last good one in the message.
    """

    def __init__(self, checkpoints_dir: str | os.PathLike | None = None) -> None:
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir is not None else None
        self._batch_idx = -1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        value = loss.detach().float().flatten()[0].item()
        what = "NaN" if math.isnan(value) else f"{value}"
        last = self.checkpoints_dir / "last.ckpt" if self.checkpoints_dir is not None else None
        kept = (f"last good checkpoint kept: {last}" if last is not None and last.exists()
                else "no checkpoint had been written yet")
        raise SSLClusterError(
            f"training loss is {what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx}); training stopped before this step changed the weights; {kept} "
            "(lower method.optim.lr or check the data)")


class SkippedFilesReport(pl.Callback):
    """Write the train source's skipped files to ``<run>/skipped_files.csv`` and log how many, at fit start."""

    def __init__(self, run_path: str | os.PathLike, source: object, split: str = "train") -> None:
        self.run_path = Path(run_path)
        self.source = source
        self.split = split

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            from sslcluster.data.scan import report_skipped

            report_skipped(self.run_path, self.split, self.source)


def reliability_callbacks(run: Any, source: object) -> list[pl.Callback]:
    """The callbacks every pretraining run gets: the NaN/inf guard and the skipped-files report."""
    return [NonFiniteLossGuard(run.checkpoints_dir), SkippedFilesReport(run.path, source)]
