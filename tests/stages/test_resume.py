"""Stopping and resuming: Ctrl-C / SIGTERM save ``last.ckpt``; ``resume=last`` continues to the same weights as an
uninterrupted run (fixed seed, CPU)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError, TrainingInterrupted
from sslcluster.pipeline import stage_pretrain
from sslcluster.stages.pretrain import pretrain
from sslcluster.store.rundir import RunDir

from ssl_helpers import TINY

RESUME = [*TINY, "trainer.max_epochs=2", "data.batch_size=32", "+trainer.limit_train_batches=4",
          "trainer.deterministic=true"]
METHOD_OVERRIDES = {"simclr": [], "moco": ["method.module.queue_size=64"], "rotation": [], "byol": [],
                    "barlowtwins": [], "vicreg": [],
                    # 1 epoch of last-layer freezing and of temperature warm-up: both change at the resumed epoch
                    "dino": ["method.module.warmup_teacher_temp=0.02", "method.module.warmup_teacher_temp_epochs=2"]}


class StopAt(pl.Callback):
    """Stops training as epoch ``epoch`` ends (a user's Ctrl-C or a scheduler's SIGTERM)."""

    def __init__(self, epoch: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.epoch, self.exc = epoch, exc

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            if self.exc is KeyboardInterrupt:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning turns it into SIGTERMException at the next check


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "barlowtwins", "vicreg", "dino"])
def test_resume_gives_the_weights_of_the_uninterrupted_run(method, tmp_path):
    overrides = [f"run.root={tmp_path}", f"method={method}", *RESUME, *METHOD_OVERRIDES[method]]
    straight = stage_pretrain(compose(overrides + ["run.key=straight"]))
    # the same run, stopped by Ctrl-C as its first epoch ends (before the epoch's own checkpoint)
    with pytest.raises(SystemExit):
        pretrain(compose(overrides + ["run.key=stopped"]), RunDir.create(tmp_path, "stopped"),
                 callbacks=[StopAt(0)])
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert last.is_file() and torch.load(last, weights_only=False)["global_step"] == 4
    # ... continued with resume=last in its own run directory
    stage_pretrain(compose(overrides + ["run.key=stopped", "resume=last"]))
    a, b = weights(straight.path / "checkpoints" / "last.ckpt"), weights(last)
    assert torch.load(last, weights_only=False)["global_step"] == 8
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if method == "moco":  # the queue travels in the checkpoint too
        qa = torch.load(straight.path / "checkpoints" / "last.ckpt", weights_only=False)["sslcluster_moco_queue"]
        qb = torch.load(last, weights_only=False)["sslcluster_moco_queue"]
        assert torch.equal(qa["bank"], qb["bank"]) and torch.equal(qa["ptr"], qb["ptr"])


def test_sigterm_saves_last_checkpoint(tmp_path):
    overrides = [f"run.root={tmp_path}", *RESUME, "run.key=t"]
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 4.*resume=last") as e:
        pretrain(compose(overrides), RunDir.create(tmp_path, "t"), callbacks=[StopAt(0, SystemExit)])
    assert e.value.exit_code == 143  # not Lightning's SystemExit(0): a scheduler must see a terminated job
    ckpt = torch.load(tmp_path / "t" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and "sslcluster_config" in ckpt


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(SSLClusterError, match="resume=last: no checkpoint"):
        stage_pretrain(compose([f"run.root={tmp_path}", *RESUME, "resume=last"]))
    assert not any(tmp_path.iterdir())  # the failed new run left nothing behind
    with pytest.raises(SSLClusterError, match="resume=/no/such.ckpt: checkpoint not found"):
        stage_pretrain(compose([f"run.root={tmp_path}", *RESUME, "resume=/no/such.ckpt"]))


def test_resume_with_other_model_settings_is_refused(tmp_path):
    overrides = [f"run.root={tmp_path}", *RESUME, "run.key=a"]
    stage_pretrain(compose(overrides))
    with pytest.raises(SSLClusterError, match=r"checkpoint has method.name='simclr', this run 'rotation'"):
        stage_pretrain(compose(overrides + ["method=rotation", "resume=last"]))
    with pytest.raises(SSLClusterError, match=r"backbone.module.width=8, this run 16"):
        stage_pretrain(compose(overrides + ["backbone.module.width=16", "resume=last"]))
