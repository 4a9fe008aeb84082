"""Numerical faults, killed clustering runs and concurrent runs on one run root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sslcluster.cli import main
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_cluster, stage_evaluate
from sslcluster.ssl.callbacks import NonFiniteLossGuard
from sslcluster.stages.export import export_split
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.rundir import RunDir

from proc_helpers import child_env





# -- numerical faults ------------------------------------------------------------------------------------------

def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch,
                                                                                      capsys):
    from sslcluster.ssl.methods.simclr import SimCLR

    bad_step = 25  # digits train split: 1,437 images, batches of 64 -> 22 steps per epoch; step 25 is in epoch 1
    orig = SimCLR.training_step

    def step(self, batch, batch_idx):
        loss = orig(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= bad_step else loss

    monkeypatch.setattr(SimCLR, "training_step", step)
    code = main(["pretrain", *tiny, "run.key=nanloss", "trainer.max_epochs=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    msg = err[-1]
    assert msg.startswith("sslcluster: error: training loss is NaN at step 25 (epoch 1, batch 3)"), msg
    ckpts = tmp_path / "runs" / "nanloss" / "checkpoints"
    assert "last good checkpoint kept" in msg and str(ckpts / "last.ckpt") in msg
    # the run is kept, with the checkpoint of the last good epoch and no later one
    ck = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert ck["global_step"] == 22 and ck["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch0000.ckpt", "last.ckpt"]


def test_inf_loss_is_caught_before_backward():
    guard = NonFiniteLossGuard(None)
    trainer = SimpleNamespace(global_step=7, current_epoch=2)
    guard.on_train_batch_start(trainer, None, None, 3)
    guard.on_before_backward(trainer, None, torch.tensor(1.5))  # finite: nothing happens
    with pytest.raises(SSLClusterError, match=r"loss is inf at step 7 \(epoch 2, batch 3\).*no checkpoint"):
        guard.on_before_backward(trainer, None, torch.tensor(float("inf")))


def test_lagged_guard_reads_the_flag_a_step_later_and_before_the_epoch_checkpoint():
    """The CUDA way (forced here on CPU): no read-back in on_before_backward; the next step, the epoch's end or a
    checkpoint raises, naming the bad step."""
    guard = NonFiniteLossGuard(None, lagged=True)
    trainer = SimpleNamespace(global_step=7, current_epoch=2)
    guard.on_train_batch_start(trainer, None, None, 3)
    guard.on_before_backward(trainer, None, torch.tensor(1.5))
    guard.on_train_batch_start(trainer, None, None, 4)  # the finite step resolves quietly
    guard.on_before_backward(trainer, None, torch.tensor(float("nan")))  # no exception yet
    with pytest.raises(SSLClusterError, match=r"loss is NaN at step 7 \(epoch 2, batch 4\); training stopped; "
                                              r"no checkpoint holds the weights after this step"):
        guard.on_train_batch_start(trainer, None, None, 5)
    guard.on_before_backward(trainer, None, torch.tensor(float("inf")))
    with pytest.raises(SSLClusterError, match="loss is inf"):
        guard.on_train_epoch_end(trainer, None)


def test_lagged_guard_keeps_a_nan_on_an_epochs_last_step_out_of_its_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    import sslcluster.stages.pretrain as pretrain_stage
    from sslcluster.ssl.methods.simclr import SimCLR

    orig_callbacks = pretrain_stage.reliability_callbacks

    def lagged(run, source):
        cbs = orig_callbacks(run, source)
        for cb in cbs:
            if isinstance(cb, NonFiniteLossGuard):
                cb.lagged = True
        return cbs

    monkeypatch.setattr(pretrain_stage, "reliability_callbacks", lagged)
    orig = SimCLR.training_step
    bad_step = 43  # 22 steps per epoch: the last step of epoch 1

    def step(self, batch, batch_idx):
        loss = orig(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= bad_step else loss

    monkeypatch.setattr(SimCLR, "training_step", step)
    code = main(["pretrain", *tiny, "run.key=nanlag", "trainer.max_epochs=3"])
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "training loss is NaN at step 43 (epoch 1, batch 21)" in msg, msg
    ckpts = tmp_path / "runs" / "nanlag" / "checkpoints"
    ck = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert ck["epoch"] == 0 and ck["global_step"] == 22  # epoch 1's checkpoint was never written
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())


def test_sparse_epoch_checkpoints_still_end_with_the_final_weights(tiny, tmp_path):
    """trainer.speed.checkpoint_every_n_epochs=2 over 3 epochs: epoch checkpoints at 2, last.ckpt at the end."""
    assert main(["pretrain", *tiny, "run.key=sparse", "trainer.max_epochs=3",
                 "trainer.speed.checkpoint_every_n_epochs=2"]) == 0
    ckpts = tmp_path / "runs" / "sparse" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch0001.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["global_step"] == 66 and last["epoch"] == 3  # written after the last epoch: 3 epochs done
    assert not list(ckpts.glob("*.tmp"))


def test_nan_embeddings_are_refused_before_clustering(tiny, tmp_path):
    run = RunDir.create(tmp_path / "runs", "nanemb")
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    x[[3, 17]] = np.nan
    x[20, 1] = np.inf
    ids = [f"i{k}" for k in range(50)]
    write_embeddings(run.embeddings_dir("test"), x, EmbeddingIndex(ids, ids), split="test")
    run.release()
    with pytest.raises(SSLClusterError, match=r"3 embedding rows contain NaN or inf \(first rows: \[3, 17, 20\]\)"):
        stage_cluster(compose(tiny + ["run.key=nanemb", "clustering.features=backbone"]))
    assert not (run.path / "clusters" / "kmeans-test").exists()  # nothing written as if it succeeded


# -- killed clustering -----------------------------------------------------------------------------------------

CLUSTER_SCRIPT = textwrap.dedent("""
    import sys, time
    import sslcluster.stages.cluster as cl
    from sslcluster.clustering.base import ClusteringAlgorithm
    from sslcluster.config import compose
    from sslcluster.pipeline import stage_cluster

    real_build = cl.build
    class Slow(ClusteringAlgorithm):  # the configured algorithm, taking long enough to be killed mid-fit
        def __init__(self, algo):
            self.algo = algo
        def fit_predict(self, x):
            time.sleep(600)
    cl.build = lambda node, **kw: Slow(real_build(node, **kw))
    stage_cluster(compose(sys.argv[1:]))
""")


def test_killed_clustering_leaves_no_record_claiming_success(tiny, tmp_path, capsys):
    run = RunDir.create(tmp_path / "runs", "c")
    export_split(compose(tiny), run, "test", None, "pixels", name="test")
    run.release()
    script = tmp_path / "cluster_child.py"
    script.write_text(CLUSTER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), *tiny, "run.key=c", "clustering.features=backbone"], env=child_env(), cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rec_path = run.path / "clusters" / "kmeans-test" / "record.json"
    t0 = time.monotonic()
    while not rec_path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 120, "clustering never started"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    record = json.loads(rec_path.read_text())
    assert record["status"] == "running" and "finished" not in record
    assert not (rec_path.parent / "labels.npy").exists()
    # nothing downstream takes it as a result
    with pytest.raises(SSLClusterError, match="status is 'running', not 'complete'"):
        stage_evaluate(compose(tiny + ["run.key=c"]))
    assert main(["runs", f"run.root={tmp_path / 'runs'}", "c"]) == 0
    assert "status=running" in capsys.readouterr().out
    # rerunning the same key replaces the unfinished clustering
    stage_cluster(compose(tiny + ["run.key=c", "clustering.features=backbone"]))
    assert json.loads(rec_path.read_text())["status"] == "complete"
    assert np.load(rec_path.parent / "labels.npy").shape == (360,)


# -- concurrency -----------------------------------------------------------------------------------------------

RACE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from sslcluster.config import compose
    from sslcluster.errors import SSLClusterError
    import sslcluster.store.rundir as rundir
    from sslcluster.pipeline import open_run

    work, me, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    real_new_key = rundir.new_key
    # phase 1: the same explicit key; phase 2: fresh keys, and both processes draw the same fresh key first
    for phase, extra in (("explicit", ["run.key=shared"]), ("auto", [])):
        cfg = compose(overrides + extra)
        if phase == "auto":
            drawn = []
            rundir.new_key = lambda tag: real_new_key(tag) if drawn else (drawn.append(1), "same-auto-key")[1]
        (work / f"ready-{phase}-{me}").write_text("")
        while not (work / f"go-{phase}").exists():
            time.sleep(0.001)
        try:
            with open_run(cfg, "run") as run:
                (run.path / f"owner-{os.getpid()}").write_text(str(os.getpid()))
                time.sleep(1.0)
                result = f"ok {run.key}"
        except SSLClusterError as e:
            result = f"refused {e}"
        tmp = work / f".out-{phase}-{me}"
        tmp.write_text(result)
        tmp.rename(work / f"out-{phase}-{me}")  # atomic: the parent never reads a half-written result
""")


@pytest.fixture
def raced(tiny, tmp_path) -> dict[str, list[str]]:
    """Two processes open a run at the same moment, twice (see RACE_SCRIPT); what each reported, per phase."""
    script = tmp_path / "race.py"
    script.write_text(RACE_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i), *tiny], env=child_env(),
                              cwd=str(tmp_path), stderr=subprocess.PIPE) for i in range(2)]
    results: dict[str, list[str]] = {}
    for phase in ("explicit", "auto"):
        t0 = time.monotonic()
        while not all((tmp_path / f"ready-{phase}-{i}").exists() for i in range(2)):
            assert time.monotonic() - t0 < 180, "race children did not start"
            for p in procs:
                assert p.poll() is None, p.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        (tmp_path / f"go-{phase}").write_text("")
        while not all((tmp_path / f"out-{phase}-{i}").exists() for i in range(2)):
            assert time.monotonic() - t0 < 180, "race children did not finish"
            time.sleep(0.01)
        results[phase] = [(tmp_path / f"out-{phase}-{i}").read_text() for i in range(2)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()[-2000:]
    return results


def test_concurrent_runs_never_share_a_directory_or_key(raced, tmp_path):
    # the same explicit key: one process gets it, the other is refused and never writes into it
    explicit = raced["explicit"]
    assert sorted(r.split()[0] for r in explicit) == ["ok", "refused"], explicit
    assert "'shared'" in next(r for r in explicit if r.startswith("refused"))
    assert len(list((tmp_path / "runs" / "shared").glob("owner-*"))) == 1
    # fresh keys, even when both draw the same one first: two directories, one owner each
    auto = raced["auto"]
    assert all(r.startswith("ok ") for r in auto), auto
    keys = {r.split()[1] for r in auto}
    assert len(keys) == 2 and "same-auto-key" in keys
    for key in keys:
        assert len(list((tmp_path / "runs" / key).glob("owner-*"))) == 1


def test_a_run_in_use_cannot_be_opened_or_overwritten_by_another_process(tiny, tmp_path):
    run = RunDir.create(tmp_path / "runs", "busy")
    code = ("import sys; from sslcluster.store.rundir import RunDir; from sslcluster.errors import "
            "SSLClusterError\nfor mode in ('open', 'overwrite'):\n    try:\n        RunDir.open(sys.argv[1], 'busy') "
            "if mode == 'open' else RunDir.create(sys.argv[1], 'busy', overwrite=True)\n        print(mode, 'ok')\n"
            "    except SSLClusterError as e:\n        print(mode, e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], env=child_env(),
                         capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert len(out) == 2
    for line in out:
        assert f"in use by another process (pid {os.getpid()})" in line, out
    assert run.path.is_dir()
    again = RunDir.open(tmp_path / "runs", "busy")  # the same process may open it again
    again.release()  # drops the lock now ...
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], env=child_env(),
                         capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert out == ["open ok", "overwrite ok"]
    # ... and otherwise it lasts as long as a RunDir of the run is alive in this process
    run = RunDir.open(tmp_path / "runs", "busy")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], env=child_env(),
                         capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert all("in use by another process" in line for line in out), out
    del run
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], env=child_env(),
                         capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert out == ["open ok", "overwrite ok"]
