"""How often DINO's per-parameter gradient clipping (``method.module.clip_grad``, 3.0 as DINO's main_dino.py) acts
on the digits default: every parameter's gradient norm before the clip, at every optimiser step of a DINO run.

    python benchmarks/dino_clip.py --epochs 20 --seed 0 --root /tmp/dino_clip

Prints the optimiser steps, how many (parameter, step) pairs were above the clip, the largest norm, and the largest
norm of each epoch (benchmarks/RESULTS.md, "Faithful to the papers").
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from _common import machine  # noqa: E402  (also puts the repository on sys.path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="/tmp/dino_clip", help="run.root of the (throwaway) run")
    a = p.parse_args(argv)
    import pytorch_lightning as pl

    from sslcluster.config import compose
    from sslcluster.stages.pretrain import pretrain
    from sslcluster.store.rundir import RunDir

    class Norms(pl.Callback):
        """Per-parameter gradient norms as the optimiser is about to step (callbacks' ``on_before_optimizer_step``
        runs before the method's, which clips)."""

        def __init__(self, clip: float) -> None:
            self.clip, self.steps, self.clipped, self.max = clip, 0, 0, 0.0
            self.per_epoch: dict[int, float] = {}

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            norms = [float(q.grad.norm()) for q in pl_module.parameters() if q.grad is not None]
            self.steps += 1
            self.clipped += sum(n > self.clip for n in norms)
            self.max = max(self.max, *norms)
            e = int(trainer.current_epoch)
            self.per_epoch[e] = max(self.per_epoch.get(e, 0.0), *norms)

    print(f"# dino_clip | {machine()}", flush=True)
    cfg = compose(["method=dino", f"trainer.max_epochs={a.epochs}", "monitor.knn=false", "monitor.linear=false",
                   f"run.root={a.root}", f"seed={a.seed}", "run.overwrite=true"])
    run = RunDir.create(a.root, f"dino-clip-e{a.epochs}-s{a.seed}", overwrite=True)
    cb = Norms(float(cfg.method.module.clip_grad))
    pretrain(cfg, run, callbacks=[cb])
    out = {"epochs": a.epochs, "seed": a.seed, "steps": cb.steps, "clipped_param_steps": cb.clipped,
           "max_norm": round(cb.max, 4), "max_per_epoch": {k: round(v, 4) for k, v in cb.per_epoch.items()}}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
