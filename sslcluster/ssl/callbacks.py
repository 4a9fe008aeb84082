"""Lightning callbacks that keep a training run honest.

- :class:`NonFiniteLossGuard` stops training at the first NaN or inf loss, with a message naming the step; the
  checkpoints written so far (``last.ckpt``: the last good one) stay as they are. On CPU the check comes before
  ``backward``, so the bad step never changes the weights; on CUDA it reads the flag one step later through a
  pinned buffer and an event, so the GPU queue never drains for it (see the class).
- :class:`HostScalars` logs the method's Python-number curves (learning rate, MoCo's momentum) on the logger's
  steps only, straight to the loggers: ``LightningModule.log`` of a number makes a device tensor every step, a
  host-to-device copy that synchronises on CUDA.
- :class:`SkippedFilesReport` records the train split's skipped files in the run directory when training starts.
- :class:`CheckpointOnInterrupt` writes ``last.ckpt`` on Ctrl-C or SIGTERM; :class:`RNGState` keeps the random
  states in checkpoints so a resumed run draws what an uninterrupted one would have.

The online kNN / linear-probe monitors are callbacks too; they live with their probes in :mod:`sslcluster.ssl.monitors`.
- :class:`TrainProgress` shows training's steps with rate and time left on any trainer
  (:mod:`sslcluster.progress`: a bar on a terminal, a log line every few percent elsewhere).
"""

from __future__ import annotations

import logging
import math
import time
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress
from sslcluster.ssl.methods.base import SSLMethod

log = logging.getLogger(__name__)


class NonFiniteLossGuard(pl.Callback):
    """Raise :class:`SSLClusterError` when the training loss is NaN or inf.

    Two ways of reading the loss, chosen per device unless ``lagged`` is given:

    - immediate (CPU and other devices): checked in ``on_before_backward``, so the bad step never updates the
      weights. On CUDA this would be a host-device synchronisation every step: the CPU would wait for the
      forward pass to finish before queueing the backward pass.
    - lagged (CUDA): the finite flag and the loss are copied into pinned host memory without blocking and an
      event is recorded behind the copy; the next step (or the epoch's end, or the end of training) waits on
      that event only, which is long past by then, and raises. The bad step has then already been applied to the
      weights in memory, so the guard also runs before any checkpoint is written at the epoch's end: no
      checkpoint ever holds weights after a non-finite loss.

    Args:
        checkpoints_dir: where the run's checkpoints are, to name the last good one in the message.
        lagged: force one way (None: lagged on CUDA, immediate elsewhere).
    """

    def __init__(self, checkpoints_dir: str | os.PathLike | None = None, lagged: bool | None = None) -> None:
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir is not None else None
        self.lagged = lagged
        self._batch_idx = -1
        self._pending: tuple[torch.Tensor, Any, tuple[int, int, int]] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Check the previous step's pending loss; remember the batch index."""
        self._resolve()
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        """Check the loss (a scalar tensor) for NaN/inf: at once, or when ``lagged`` (CUDA) at the next step."""
        where = (trainer.global_step, trainer.current_epoch, self._batch_idx)
        loss = loss.detach()
        lagged = self.lagged if self.lagged is not None else loss.device.type == "cuda"
        if not lagged:
            if not bool(torch.isfinite(loss).all()):
                self._raise(loss.float().flatten()[0].item(), where, applied=False)
            return
        bad = ~torch.isfinite(loss).all()
        first = loss.float().reshape(-1)[:1]
        flag = torch.cat([bad.float().view(1), torch.where(bad, first, torch.zeros_like(first))])  # (2,)
        if loss.device.type == "cuda":  # pinned buffers come from torch's caching host allocator
            host = torch.empty(2, dtype=torch.float32, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = flag, None
        self._pending = (host, event, where)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the last pending loss before the epoch's checkpoint."""
        self._resolve()  # Lightning runs checkpoint callbacks after the others: before the epoch's checkpoint

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the last pending loss."""
        self._resolve()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Check the pending loss before a checkpoint is written."""
        self._resolve()

    def _resolve(self) -> None:
        if self._pending is None:
            return
        host, event, where = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if float(host[0]) != 0.0:
            self._raise(float(host[1]), where, applied=True)

    def _raise(self, value: float, where: tuple[int, int, int], applied: bool) -> None:
        step, epoch, batch_idx = where
        what = "NaN" if math.isnan(value) else f"{value}"
        last = self.checkpoints_dir / "last.ckpt" if self.checkpoints_dir is not None else None
        kept = (f"last good checkpoint kept: {last}" if last is not None and last.exists()
                else "no checkpoint had been written yet")
        stopped = ("training stopped; no checkpoint holds the weights after this step" if applied else
                   "training stopped before this step changed the weights")
        raise SSLClusterError(
            f"training loss is {what} at step {step} (epoch {epoch}, batch {batch_idx}); {stopped}; {kept} "
            "(lower method.optim.lr or check the data)")


class HostScalars(pl.Callback):
    """Log the module's ``host_scalars()`` (a dict of Python numbers: learning rate, momentum, ...) to every
    logger, on the steps the loggers write (``trainer.log_every_n_steps``), as Lightning's own
    ``LearningRateMonitor`` does; nothing touches the device."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """On logging steps, send the module's host scalars to every logger."""
        if not trainer.loggers or not trainer._logger_connector.should_update_logs:
            return
        scalars = pl_module.host_scalars() if isinstance(pl_module, SSLMethod) else {}
        if scalars:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics(dict(scalars), step=step)


class FinalCheckpoint(pl.Callback):
    """Make ``last.ckpt`` hold the final weights when epoch checkpoints are written only every n epochs
    (``trainer.speed.checkpoint_every_n_epochs``): at the end of training, if the checkpoint callback has not
    saved at this step, write it (to a temporary name, then renamed: atomic)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final checkpoint atomically unless the last step's checkpoint was already saved."""
        ckpt = trainer.checkpoint_callback
        # the same decision on every rank (no file-system check: nodes need not share one), since all call below
        if getattr(ckpt, "_last_global_step_saved", None) == trainer.global_step:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes; it ends with a barrier
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class SkippedFilesReport(pl.Callback):
    """Write the train source's skipped files to ``<run>/skipped_files.csv`` and log how many, at fit start."""

    def __init__(self, run_path: str | os.PathLike, source: object, split: str = "train") -> None:
        self.run_path = Path(run_path)
        self.source = source
        self.split = split

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the files skipped while scanning the split (rank 0 only)."""
        if trainer.is_global_zero:
            from sslcluster.data.folders import report_skipped

            report_skipped(self.run_path, self.split, self.source)


class CheckpointOnInterrupt(pl.Callback):
    """Writes ``last.ckpt`` (atomically, global rank 0 only) when training stops on Ctrl-C or SIGTERM.

    Lightning turns SIGTERM into ``SIGTERMException`` at the next batch boundary and calls ``on_exception``
    for both; no collective is used here, since other ranks may be gone.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """On Ctrl-C or SIGTERM, save a checkpoint of where training stopped (rank 0, atomically)."""
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.is_global_zero:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, tmp)
            os.replace(tmp, self.path)
        except Exception as e:  # noqa: BLE001 - never mask the interrupt itself
            tmp.unlink(missing_ok=True)
            log.error("interrupted, but could not save %s: %s", self.path, e)
            return
        log.warning("interrupted (%s) at epoch %d, step %d: saved %s", type(exception).__name__,
                    trainer.current_epoch, trainer.global_step, self.path)


class RNGState(pl.Callback):
    """Keeps the torch, numpy and Python random states in checkpoints and restores them on resume, so a resumed run
    draws the same shuffles, augmentations (and MoCo's BN shuffles) as an uninterrupted one would have."""

    def state_dict(self) -> dict[str, Any]:
        """The torch, numpy and Python RNG states, for the checkpoint."""
        # plain types only, so that Lightning's weights-only checkpoint loading accepts them
        kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
        return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
                "python": random.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the torch, numpy and Python RNG states saved by :meth:`state_dict`."""
        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])
class FitClock(pl.Callback):
    """Wall seconds of a fit's training loop (first training batch to the end of training) and the optimiser step
    it started from (non-zero when resumed), for the run's training rate."""

    def __init__(self) -> None:
        self.first_step = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the starting step."""
        self.first_step = int(trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Start the clock at the first batch (after the loaders' start-up)."""
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the clock."""
        if self._t0 is not None:
            self.seconds = time.perf_counter() - self._t0


class TrainProgress(pl.Callback):
    """Training progress over all epochs' optimiser steps (Lightning's ``estimated_stepping_batches``, so
    ``max_epochs`` and ``limit_train_batches`` count), on rank zero. It reads nothing from the device (no loss),
    so it costs no synchronisation on a GPU."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.total = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open the progress bar over the estimated steps, starting at the current step (rank 0 only)."""
        if not trainer.is_global_zero:
            return
        total = trainer.estimated_stepping_batches
        self.total = int(total) if math.isfinite(total) else 0
        self.bar = progress(self.total, "training", unit="step", initial=int(trainer.global_step))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Advance the progress bar by one step; show the epoch on an epoch's first batch. When a time budget
        fixes the run's steps (``step_plan``), the bar counts towards them from then on."""
        plan = pl_module.step_plan if isinstance(pl_module, SSLMethod) else None
        if self.bar is not None and plan is not None and not plan.pending and plan.total not in (None, self.total):
            self.bar.close()
            self.total = int(plan.total)  # type: ignore[arg-type]
            self.bar = progress(self.total, "training", unit="step", initial=max(int(trainer.global_step) - 1, 0))
        if self.bar is not None:
            if hasattr(self.bar, "set_postfix_str") and batch_idx == 0:
                self.bar.set_postfix_str(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
            self.bar.update(1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Close the progress bar when training fails."""
        self.on_train_end(trainer, pl_module)


def reliability_callbacks(run: Any, source: object) -> list[pl.Callback]:
    """The callbacks every pretraining run gets: the NaN/inf guard, the skipped-files report, the final
    checkpoint and the host-side scalar curves."""
    return [NonFiniteLossGuard(run.checkpoints_dir), SkippedFilesReport(run.path, source),
            FinalCheckpoint(run.checkpoints_dir / "last.ckpt"), HostScalars()]
