"""The learning rate each optimiser step uses, for a short digits run: where the warm-up ends, whether the cosine
reaches its floor at the last step. Compare versions of the schedule (issue 32, finding 2) by running this on each.

    python benchmarks/lr_schedule.py                                  # max_epochs=-1, max_steps=30
    python benchmarks/lr_schedule.py trainer.max_epochs=10 trainer.max_steps=25
"""

from __future__ import annotations

import sys
import tempfile

import pytorch_lightning as pl

from sslcluster.config import compose
from sslcluster.stages.pretrain import pretrain
from sslcluster.store.rundir import RunDir


class LRs(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # type: ignore[no-untyped-def]
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))


def main(argv: list[str]) -> None:
    tmp = tempfile.mkdtemp()
    overrides = argv or ["trainer.max_epochs=-1", "trainer.max_steps=30"]
    cfg = compose([f"run.root={tmp}", "data.batch_size=64", "backbone.module.width=8", "backbone.module.depth=2",
                   "logger=none", "monitor.knn=false", "monitor.linear=false", *overrides])
    rec = LRs()
    pretrain(cfg, RunDir.create(tmp, "lr"), callbacks=[rec])
    peak = max(rec.lrs)
    print(f"steps {len(rec.lrs)}; the peak at step {rec.lrs.index(peak)}; last step at {rec.lrs[-1] / peak:.4f} "
          f"of the peak; lr/peak: " + " ".join(f"{v / peak:.3f}" for v in rec.lrs))


if __name__ == "__main__":
    main(sys.argv[1:])
