"""A training process stopped by a signal mid-epoch (a real subprocess; the test sends the signal).

- SIGKILL: nothing can be saved; ``last.ckpt`` is the end of the last complete epoch, and ``resume=last`` ends with
  exactly the weights of an uninterrupted run (fixed seed, CPU).
- SIGTERM (what schedulers send): ``last.ckpt`` is also written where training stopped, mid-epoch, and ``resume=last``
  trains on to the end. A mid-epoch resume restarts the epoch's data order, so it is not bit-identical; resuming
  from the epoch checkpoint is, as the test shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sslcluster.config import compose
from sslcluster.pipeline import stage_pretrain

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["trainer.max_epochs=3", "data.batch_size=32", "+trainer.limit_train_batches=6",
             "trainer.deterministic=true", "backbone.module.width=8", "backbone.module.depth=2", "logger=none",
             "monitor.knn=false", "monitor.linear=false", "method.module.hidden_dim=32", "method.module.output_dim=16"]

# The child trains; in epoch 2 (index 1), after 3 steps, it writes a marker and then sleeps, so that the test's
# signal lands mid-epoch, after the end-of-epoch-1 checkpoint and before the end of epoch 2.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pytorch_lightning as pl
    from sslcluster.config import compose
    from sslcluster.pipeline import open_run
    from sslcluster.stages.pretrain import pretrain

    marker = Path(sys.argv[1])
    release = marker.with_name("release")

    class PauseMidEpoch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                marker.write_text(str(trainer.global_step))
                t0 = time.monotonic()
                while not release.exists() and time.monotonic() - t0 < 120:
                    time.sleep(0.05)

    cfg = compose(sys.argv[2:])
    with open_run(cfg, "pretrain", reuse=False) as run:
        pretrain(cfg, run, callbacks=[PauseMidEpoch()])
""")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # the same intra-op thread count as this process, which trains the runs compared with the child's: a different
    # count changes the order of floating-point reductions, and the weights would differ in the last bits
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_training_resumes_to_the_uninterrupted_weights(sig, tmp_path):
    common = [f"run.root={tmp_path / 'runs'}", *OVERRIDES]
    script, marker = tmp_path / "child.py", tmp_path / "paused"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *common, "run.key=killed"],
                            env=child_env(), cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() - t0 < 300, "the child never reached epoch 2"
        time.sleep(0.05)
    proc.send_signal(sig)
    time.sleep(0.5)
    (tmp_path / "release").write_text("")  # SIGTERM acts at the next batch boundary
    proc.wait(timeout=120)
    assert proc.returncode != 0
    ckpts = tmp_path / "runs" / "killed" / "checkpoints"
    last = ckpts / "last.ckpt"
    assert last.is_file()
    step_at_stop = torch.load(last, weights_only=False)["global_step"]
    # SIGKILL: the end-of-epoch-1 checkpoint (6 steps); SIGTERM: also saved where it stopped, mid-epoch 2
    assert step_at_stop == 6 if sig == signal.SIGKILL else 6 <= step_at_stop <= 9
    if sig == signal.SIGTERM:
        epoch_ckpt = tmp_path / "epoch0000.ckpt"  # kept aside: the run below replaces its epoch checkpoints
        epoch_ckpt.write_bytes((ckpts / "epoch0000.ckpt").read_bytes())
        assert torch.load(epoch_ckpt, weights_only=False)["global_step"] == 6
        # resume=last continues from the mid-epoch checkpoint to the end ...
        stage_pretrain(compose(common + ["run.key=killed", "resume=last"]))
        assert torch.load(last, weights_only=False)["global_step"] == 18
        # ... and the epoch checkpoint resumes (in a new run) to the uninterrupted weights
        resume, key = [f"resume={epoch_ckpt}"], "again"
    else:
        resume, key = ["resume=last"], "killed"
    resumed = stage_pretrain(compose(common + [f"run.key={key}", *resume]))
    last = resumed.path / "checkpoints" / "last.ckpt"
    straight = stage_pretrain(compose(common + ["run.key=straight"]))
    a, b = weights(straight.path / "checkpoints" / "last.ckpt"), weights(last)
    assert torch.load(last, weights_only=False)["global_step"] == 18
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
