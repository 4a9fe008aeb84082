"""How many optimiser steps a run takes, and the learning-rate curve over them.

A run ends at ``trainer.max_epochs``, ``trainer.max_steps`` or ``trainer.max_time``, whichever comes first. The
schedule (linear warm-up, then a cosine to its floor: lightly's ``cosine_warmup_schedule``) must span the steps the
run will really take, or it is cut short (a warm-up that fills the run, a cosine never reaching its floor).
:func:`plan_steps` counts them from Lightning's ``estimated_stepping_batches`` (epochs and ``max_steps`` both
count) and the optimiser steps per epoch; under a time budget :class:`TimeBudget` measures the step rate over the
first steps and then fixes the count (and stops the run there), so warm-up and cosine fit the budget; where the
rate then drifts (other work on the machine starting or ending) it re-fits the count to the time left, the cosine
carrying on from where it is (no jump in the learning rate).

The momentum (EMA) and weight-decay schedules read the same :class:`StepPlan`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import pytorch_lightning as pl
from lightly.utils.scheduler import cosine_warmup_schedule

from sslcluster.errors import SSLClusterError

log = logging.getLogger(__name__)

#: the learning rate's floor, as a fraction of its peak (lightly's ``CosineWarmupScheduler`` default end value)
FLOOR = 0.001


@dataclass
class StepPlan:
    """The optimiser steps of a run. ``total`` is None while a time budget is still measuring the step rate."""

    total: int | None
    warmup: int
    steps_per_epoch: int
    #: the time budget (seconds) that fixes ``total``, where there is one
    budget_s: float | None = None
    #: True while the time budget is still measuring the step rate (``total`` provisional or None)
    pending: bool = False
    #: where a time budget last re-fitted ``total`` after the cosine had begun: the step, and the cosine's progress
    #: (0 at its start, 1 at its floor) there; the cosine goes on from that progress to 1 at the new last step
    anchor_step: int | None = None
    anchor_progress: float = 0.0

    def factor(self, step: int) -> float:
        """The learning rate at optimiser ``step`` (0-based) as a fraction of its peak: linear warm-up over
        ``warmup`` steps, then a cosine reaching ``FLOOR`` at the last step ``total - 1``. While the step count is
        not known yet only the warm-up ramp applies."""
        if self.total is None or self.pending:
            return min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.anchor_step is None or step < self.warmup:
            return cosine_warmup_schedule(step=min(step, self.total - 1), max_steps=self.total, start_value=1.0,
                                          end_value=FLOOR, warmup_steps=self.warmup, warmup_start_value=0.0)
        return FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def progress(self, step: int) -> float:
        """How far the cosine phase is at ``step``: 0 at its first step, 1 at the last step (lightly's
        ``cosine_warmup_schedule`` without a re-fit; from the anchor on after one)."""
        assert self.total is not None
        if step < self.warmup:
            return 0.0
        if self.anchor_step is None:
            span = self.total - self.warmup - 1
            return 1.0 if span <= 0 else min(1.0, (step - self.warmup) / span)
        span = self.total - 1 - self.anchor_step
        done = 1.0 if span <= 0 else min(1.0, max(0.0, (step - self.anchor_step) / span))
        return self.anchor_progress + (1.0 - self.anchor_progress) * done

    def refit(self, step: int, total: int) -> None:
        """Make ``total`` the run's step count from optimiser ``step`` on, the learning rate continuous there: the
        cosine keeps its progress at ``step`` and reaches its floor at the new last step."""
        assert self.total is not None
        total = max(int(total), step + 1, self.warmup + 1)
        if step >= self.warmup:
            self.anchor_progress, self.anchor_step = self.progress(step), step
        self.total = total

    def span(self) -> int:
        """Steps the momentum and weight-decay schedules run over: ``total``, or, before a time budget fixed it,
        a count so large that those schedules stay at their start values meanwhile."""
        return self.total if self.total is not None and not self.pending else 10**12

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return asdict(self)


def warmup_steps(warmup_epochs: float, steps_per_epoch: int, total: int | None, max_fraction: float) -> int:
    """``warmup_epochs`` in optimiser steps, at most ``max_fraction`` of ``total`` (so a short run, ``max_steps`` or
    a small time budget keeps a cosine phase), and always below ``total``."""
    steps = int(round(float(warmup_epochs) * steps_per_epoch))
    if total is not None:
        steps = min(steps, int(math.floor(max_fraction * total)), max(total - 1, 0))
    return max(steps, 0)


def optimizer_steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimiser steps in one epoch: training batches (after ``limit_train_batches``) over gradient accumulation.
    The training data are set up first where they are not yet (as ``estimated_stepping_batches`` does: with
    ``max_epochs=-1`` it returns without)."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    if not math.isfinite(batches) or batches <= 0:
        return 1
    return max(1, math.ceil(int(batches) / accumulate))


def plan_steps(trainer: pl.Trainer, warmup_epochs: float, max_fraction: float) -> StepPlan:
    """The plan of a fit: ``estimated_stepping_batches`` steps (the smaller of ``max_epochs`` x steps per epoch and
    ``max_steps``). Under a :class:`TimeBudget` callback the count stays pending until the budget fixes it (it is
    unknown with ``max_epochs=-1`` and no ``max_steps``)."""
    estimated = trainer.estimated_stepping_batches
    per_epoch = optimizer_steps_per_epoch(trainer)
    total = int(estimated) if math.isfinite(estimated) else None
    budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
    if total is None and budget is None:
        raise SSLClusterError("trainer.max_epochs=-1 needs trainer.max_steps or trainer.max_time (the run would "
                              "never end)")
    return StepPlan(total=total, warmup=warmup_steps(warmup_epochs, per_epoch, total, max_fraction),
                    steps_per_epoch=per_epoch, budget_s=budget.seconds if budget is not None else None,
                    pending=budget is not None)


_DHMS = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})\s*$")


def parse_max_time(value: Any) -> float | None:
    """Seconds of ``trainer.max_time`` as Lightning takes it: ``"DD:HH:MM:SS"`` or a mapping of ``days``,
    ``hours``, ``minutes``, ``seconds``; None when unset."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _DHMS.match(value)
        if m is None:
            raise SSLClusterError(f"trainer.max_time={value!r}: expected DD:HH:MM:SS, e.g. 00:01:00:00 for an hour")
        d, h, mi, s = (int(g) for g in m.groups())
        seconds = float(((d * 24 + h) * 60 + mi) * 60 + s)
    elif hasattr(value, "keys"):
        units = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
        unknown = set(value.keys()) - set(units)
        if unknown:
            raise SSLClusterError(f"trainer.max_time: unknown unit(s) {sorted(unknown)}; use {', '.join(units)}")
        seconds = float(sum(float(value[k]) * units[k] for k in value.keys()))
    else:
        raise SSLClusterError(f"trainer.max_time={value!r}: expected DD:HH:MM:SS")
    if seconds <= 0:
        raise SSLClusterError(f"trainer.max_time={value!r} is not a positive duration")
    return seconds


class TimeBudget(pl.Callback):
    """Fit the schedule to ``trainer.max_time``: after ``skip`` optimiser steps (start-up: workers, caches), time
    ``measure`` more, then fix the plan's step count to what the rest of the budget (less ``margin``, for the
    epoch ends' checkpoints and monitors) holds at that rate, capped by ``max_epochs`` / ``max_steps``, and end
    the run there. Lightning's own ``max_time`` stays the hard stop.

    The model must expose ``step_plan`` (:class:`StepPlan`), as :class:`~sslcluster.ssl.methods.base.SSLMethod`
    does. ``clock`` is injectable for tests."""

    def __init__(self, seconds: float, skip: int = 3, measure: int = 20, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, max_fraction: float = 0.1,
                 warmup_epochs: float = 0.0, refit_every: float = 0.05, refit_tolerance: float = 0.03) -> None:
        self.seconds, self.skip, self.measure, self.margin = float(seconds), int(skip), int(measure), float(margin)
        self.clock, self.max_fraction, self.warmup_epochs = clock, float(max_fraction), float(warmup_epochs)
        #: after the plan is fixed, the rate is measured again over every ``refit_every`` of the budget, and the
        #: step count re-fitted where the steps the rest of the budget holds differ by more than
        #: ``refit_tolerance`` of the steps planned for it
        self.refit_every, self.refit_tolerance = float(refit_every), float(refit_tolerance)
        self._window: tuple[float, int] | None = None
        self.elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run
        self._start: float | None = None
        self._t_skip: float | None = None
        self._step_skip = 0

    def elapsed(self) -> float:
        """Training seconds so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + (self.clock() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock; a resumed run whose plan the budget already fixed ends where that plan ends."""
        self._start = self.clock()
        plan: StepPlan = pl_module.step_plan  # type: ignore[assignment]
        if not plan.pending and plan.total is not None:
            trainer.fit_loop.epoch_loop.max_steps = plan.total
            self._window = (self._start, int(trainer.global_step))  # re-fits go on after a resume

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Time the measured steps; fix the plan once they are done."""
        plan: StepPlan = pl_module.step_plan  # type: ignore[assignment]
        if not plan.pending:
            self._refit(trainer, plan)
            return
        step = int(trainer.global_step)
        if self._t_skip is None:
            if step >= self.skip:
                self._t_skip, self._step_skip = self.clock(), step
            return
        if step - self._step_skip < self.measure:
            return
        now = self.clock()
        rate = (step - self._step_skip) / max(now - self._t_skip, 1e-9)  # optimiser steps per second
        plan.total = max(self._steps_in_budget(trainer, step, rate), step + 1)
        plan.warmup = warmup_steps(self.warmup_epochs, plan.steps_per_epoch, plan.total, self.max_fraction)
        plan.warmup = min(max(plan.warmup, step), plan.total - 1)  # the steps already ramped stay the warm-up's
        plan.pending = False
        trainer.fit_loop.epoch_loop.max_steps = plan.total
        self._set_lr(trainer, plan, step)
        self._window = (now, step)
        log.info("time budget %.0f s: %.2f steps/s over steps %d-%d; the schedule spans %d steps (%.1f epochs), "
                 "warm-up %d", self.seconds, rate, self._step_skip, step, plan.total,
                 plan.total / max(plan.steps_per_epoch, 1), plan.warmup)

    def _steps_in_budget(self, trainer: pl.Trainer, step: int, rate: float) -> int:
        """The run's step count if the rest of the budget (less ``margin``) goes at ``rate`` steps/s from ``step``,
        capped by ``max_epochs`` / ``max_steps`` where set."""
        left = self.seconds * (1.0 - self.margin) - self.elapsed()
        total = step + max(1, int(rate * max(left, 0.0)))
        limit = trainer.estimated_stepping_batches
        return min(total, int(limit)) if math.isfinite(limit) else total

    @staticmethod
    def _set_lr(trainer: pl.Trainer, plan: StepPlan, step: int) -> None:
        """The next step's learning rate from the plan, at once."""
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * plan.factor(step)

    def _refit(self, trainer: pl.Trainer, plan: StepPlan) -> None:
        """Every ``refit_every`` of the budget, measure the rate over the last window and re-fit the step count
        where the rest of the budget holds a different number of steps than planned (capped as the first fit)."""
        step = int(trainer.global_step)
        if self._window is None or plan.total is None or self.refit_every <= 0 or step >= plan.total - 1:
            return
        now = self.clock()
        t0, s0 = self._window
        if now - t0 < self.refit_every * self.seconds or step <= s0:
            return
        self._window = (now, step)
        rate = (step - s0) / max(now - t0, 1e-9)
        total = self._steps_in_budget(trainer, step, rate)
        planned = plan.total - step
        if planned > 0 and abs(total - plan.total) <= self.refit_tolerance * planned:
            return
        before = plan.total
        plan.refit(step, total)
        trainer.fit_loop.epoch_loop.max_steps = plan.total
        self._set_lr(trainer, plan, step)
        log.info("time budget: %.2f steps/s over the last %.0f s; the schedule now spans %d steps (was %d)",
                 rate, now - t0, plan.total, before)

    def state_dict(self) -> dict[str, Any]:
        """Training seconds so far (a resumed run's budget counts them)."""
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the seconds of the earlier sessions."""
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
