"""The learning-rate schedule spans the steps a run really takes: warm-up, then a cosine reaching its floor at the
last step, under max_epochs, max_steps, max_epochs=-1 and a time budget (trainer.max_time)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.stages.pretrain import pretrain
from sslcluster.ssl.schedule import FLOOR, TimeBudget, parse_max_time
from sslcluster.store.rundir import RunDir

# digits train split: 1,437 images; at batch 64 (drop_last) 22 optimiser steps per epoch
STEPS_PER_EPOCH = 1437 // 64


class LRs(pl.Callback):
    """The learning rate each optimiser step used."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.peak = 0.0

    def on_train_start(self, trainer, pl_module):
        self.peak = float(trainer.lr_scheduler_configs[0].scheduler.base_lrs[0])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))


def expected(total: int, warmup_epochs: float, max_fraction: float = 0.1) -> list[float]:
    """Warm-up then cosine, written from the definition: warm-up W = min(epochs x steps/epoch, 10% of the run)
    linear steps (the first at 1/W), then cos from 1 at step W to FLOOR at step total-1."""
    w = min(int(round(warmup_epochs * STEPS_PER_EPOCH)), int(math.floor(max_fraction * total)), total - 1)
    out = []
    for s in range(total):
        if s < w:
            out.append((s + 1) / w)
        else:
            t, n = s - w, total - w - 1
            out.append(FLOOR + (1 - FLOOR) * (1 + math.cos(math.pi * t / n)) / 2 if n > 0 else FLOOR)
    return out


def fit(tiny, tmp_path, overrides, callbacks=()):
    cfg = compose(tiny + ["method=simclr", "monitor.knn=false", "monitor.linear=false"] + overrides)
    rec = LRs()
    run = RunDir.create(tmp_path, "s")
    pretrain(cfg, run, callbacks=[rec, *callbacks])
    return rec, run, cfg


def check_curve(rec: LRs, total: int, warmup_epochs: float) -> None:
    assert len(rec.lrs) == total
    want = expected(total, warmup_epochs)
    for s, (got, w) in enumerate(zip(rec.lrs, want)):
        assert got == pytest.approx(rec.peak * w, rel=1e-6, abs=1e-12), s
    assert rec.lrs[-1] == pytest.approx(rec.peak * FLOOR, rel=1e-6)  # the floor at the last step
    assert max(rec.lrs) == pytest.approx(rec.peak, rel=1e-6)  # the warm-up reaches the peak


@pytest.mark.parametrize("overrides, total", [
    (["trainer.max_epochs=-1", "trainer.max_steps=30"], 30),           # steps only
    (["trainer.max_epochs=10", "trainer.max_steps=25"], 25),           # max_steps ends the run before max_epochs
    (["trainer.max_epochs=2"], 2 * STEPS_PER_EPOCH),                   # epochs only
])
def test_lr_warms_up_then_reaches_its_floor_at_the_last_step(tiny, tmp_path, overrides, total):
    rec, run, cfg = fit(tiny, tmp_path, overrides)
    check_curve(rec, total, float(cfg.method.optim.warmup_epochs))
    m = run.read_metrics()
    assert m["train_steps"] == total and m["train_planned_steps"] == total


class FakeClock:
    """Seconds that advance by ``dt`` at every reading: a fixed, known step rate."""

    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t


def test_time_budget_fixes_the_schedule_from_the_measured_rate(tiny, tmp_path, monkeypatch):
    """Under trainer.max_time the plan is pending while the rate is measured, then fixed so that the cosine ends at
    the floor exactly at the last step, where the run ends; metrics.json records the budget and steps reached."""
    import sslcluster.stages.pretrain as stage

    made: list[TimeBudget] = []

    class Clocked(TimeBudget):
        def __init__(self, *a, **k):
            super().__init__(*a, **k, clock=FakeClock(10000.0), skip=2, measure=4, refit_every=0.0)
            made.append(self)

    monkeypatch.setattr(stage, "TimeBudget", Clocked)
    # a day's budget on a clock that advances 10,000 s at each reading: 4 measured steps over one interval give
    # 0.0004 steps/s, and what is left of the day (less the 5% margin and the readings so far) holds a few dozen
    # steps; Lightning's own (real-time) max_time never stops this run
    rec, run, cfg = fit(tiny, tmp_path, ["trainer.max_epochs=-1", "trainer.max_time=01:00:00:00"])
    assert made and made[0].clock.t > 0
    total = len(rec.lrs)
    m = run.read_metrics()
    assert m["train_time_budget_s"] == 86400 and m["train_planned_steps"] == total == m["train_steps"]
    # clock readings: start 10,000; measurement from step 2 at 20,000 to step 6 at 30,000; elapsed() at 40,000
    assert total == 6 + int(4 / 10000.0 * (86400 * 0.95 - (40000.0 - 10000.0)))
    # after the measured steps the curve is the fixed plan's: cosine to the floor at the run's last step
    plan_warmup = max(min(int(round(float(cfg.method.optim.warmup_epochs) * STEPS_PER_EPOCH)),
                          int(math.floor(0.1 * total))), 6)
    for s in range(plan_warmup, total):
        t, n = s - plan_warmup, total - plan_warmup - 1
        assert rec.lrs[s] == pytest.approx(rec.peak * (FLOOR + (1 - FLOOR) * (1 + math.cos(math.pi * t / n)) / 2),
                                           rel=1e-6), s
    assert rec.lrs[-1] == pytest.approx(rec.peak * FLOOR, rel=1e-6)


class StepClock(pl.Callback):
    """A clock that reads the time the run's steps have taken: ``dt`` seconds a step up to ``slow_from``, then
    ``dt_slow`` (other work starting on the machine)."""

    def __init__(self, dt: float, slow_from: int, dt_slow: float) -> None:
        self.dt, self.slow_from, self.dt_slow, self.t = dt, slow_from, dt_slow, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        s = trainer.global_step + 1  # the time once this batch's step is done (read at its end)
        self.t = self.dt * min(s, self.slow_from) + self.dt_slow * max(0, s - self.slow_from)

    def __call__(self) -> float:
        return self.t


def test_time_budget_refits_the_schedule_when_the_step_rate_changes(tiny, tmp_path, monkeypatch):
    """Steps that become twice as slow mid-run (other work on the machine): the step count is re-fitted to the time
    left, so the run ends within its budget with the learning rate at its floor, and the re-fit moves the
    learning rate on from where it was (no jump)."""
    import sslcluster.stages.pretrain as stage

    clock = StepClock(1000.0, slow_from=40, dt_slow=2000.0)

    class Clocked(TimeBudget):
        def __init__(self, *a, **k):
            super().__init__(*a, **k, clock=clock, skip=2, measure=4)

    monkeypatch.setattr(stage, "TimeBudget", Clocked)
    budget = 86400.0
    rec, run, _ = fit(tiny, tmp_path, ["trainer.max_epochs=-1", "trainer.max_time=01:00:00:00"], callbacks=[clock])
    total = len(rec.lrs)
    # the plan fixed at step 6 held 82 steps at 1,000 s each; at 2,000 s a step after step 40 far fewer fit
    assert 40 < total < 82
    assert clock.t <= budget  # the run ended within its budget (82 planned steps would have taken 124,000 s)
    assert clock.t >= budget * 0.95 - 3 * 2000.0  # ... and used it, less the margin and the re-fit tolerance
    assert rec.lrs[-1] == pytest.approx(rec.peak * FLOOR, rel=1e-6)
    drops = [a - b for a, b in zip(rec.lrs[10:], rec.lrs[11:])]
    assert min(drops) >= -1e-12  # never rises after the warm-up
    # no jump: a step's drop stays within the cosine's steepest per-step drop over the steps left (a re-fit that
    # only changed the step count would drop about a quarter of the peak at once here)
    assert max(drops) < 0.06 * rec.peak


def test_max_epochs_minus_one_needs_an_end(tiny, tmp_path):
    with pytest.raises(SSLClusterError, match="max_epochs=-1 needs"):
        fit(tiny, tmp_path, ["trainer.max_epochs=-1"])


def test_max_time_is_parsed_as_lightning_takes_it():
    assert parse_max_time("00:01:00:00") == 3600
    assert parse_max_time({"hours": 1, "minutes": 30}) == 5400
    assert parse_max_time(None) is None
    with pytest.raises(SSLClusterError, match="trainer.max_time='1h'"):
        parse_max_time("1h")
