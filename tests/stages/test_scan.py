"""The SCAN stage (SCAN's recipe with the backbone) on digits with a tiny CNN: end to end into scored clusterings,
the same assignments for the same seed, a run killed mid-epoch resumed to the uninterrupted weights, and bad
settings refused in one line before anything is written."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sslcluster.config import compose
from sslcluster.data.sources import DigitsSource
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_evaluate, stage_pretrain, stage_scan
from sslcluster.ssl.scan import confidence_cross_entropy

from test_resume_killed import child_env
from tests.gloo import needs_gloo

MODEL = ["trainer.max_epochs=1", "data.batch_size=64", "trainer.deterministic=true", "backbone.module.width=8",
         "backbone.module.depth=2", "logger=none", "monitor.knn=false", "monitor.linear=false",
         "method.module.hidden_dim=32", "method.module.output_dim=16"]
# two SCAN epochs of 4 steps, one self-labelling epoch of 4 steps; no pictures or report (not under test here)
SCAN = ["+trainer.limit_train_batches=4", "scan.epochs=2", "scan.batch_size=32", "scan.num_heads=2",
        "scan.selflabel.epochs=1",
        "scan.selflabel.batch_size=64", "scan.selflabel.confidence_threshold=0.2", "evaluate.plots.enabled=false",
        "report.enabled=false", "export.batch_size=256"]
KEYS = ("scan_backbone-test", "scan_selflabel-test")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny pretrained digits run (checkpoint only); tests copy it."""
    root = tmp_path_factory.mktemp("scan_runs")
    stage_pretrain(compose([f"run.root={root}", "run.key=base", *MODEL, "+trainer.limit_train_batches=3"]))
    return root / "base"


def copy_run(pretrained: Path, root: Path, key: str) -> list[str]:
    """A copy of the pretrained run under ``root`` named ``key``; the overrides that address it."""
    shutil.copytree(pretrained, root / key, ignore=shutil.ignore_patterns(".lock"))
    return [f"run.root={root}", f"run.key={key}", *MODEL, *SCAN]


def test_scan_stage_end_to_end_gives_scored_clusterings(pretrained, tmp_path):
    overrides = copy_run(pretrained, tmp_path, "a")
    run = stage_scan(compose(overrides))
    neighbors = np.load(run.path / "scan" / "neighbors.npy")
    assert neighbors.shape == (1437, 21)  # 20 neighbours and the image itself (digits' train split)
    assert (neighbors == np.arange(1437)[:, None]).any(axis=1).all()
    for key in KEYS:
        cdir = run.path / "clusters" / key
        record = json.loads((cdir / "record.json").read_text())
        labels = np.load(cdir / "labels.npy")
        assert record["status"] == "complete" and record["primary"] is False
        assert labels.shape == (360,) and labels.min() >= 0 and labels.max() < 10
        assert (cdir / "curve.csv").read_text().splitlines()[0].startswith("epoch,step,")
        assert (cdir / "metrics.json").is_file() and (cdir / "plots" / "training_curve.png").is_file()
    rec = json.loads((run.path / "clusters" / KEYS[0] / "record.json").read_text())
    assert rec["fit_info"]["chosen_head"] == int(np.argmin(rec["fit_info"]["head_losses"]["total"]))
    assert len((run.path / "clusters" / KEYS[0] / "curve.csv").read_text().splitlines()) == 3  # header + 2 epochs
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert {"scan_backbone_nmi", "scan_selflabel_nmi", "scan_backbone_acc"} <= set(metrics)
    # the evaluate stage scores the SCAN clusterings like any other
    (run.path / "clusters" / KEYS[0] / "metrics.json").unlink()
    stage_evaluate(compose([*overrides, f"clustering.key={KEYS[0]}"]))
    scored = json.loads((run.path / "clusters" / KEYS[0] / "metrics.json").read_text())
    assert 0.0 <= scored["nmi"] <= 1.0 and scored["nmi"] == pytest.approx(metrics["scan_backbone_nmi"])


def test_same_seed_same_assignments_and_labels_never_read(pretrained, tmp_path, monkeypatch):
    a = stage_scan(compose(copy_run(pretrained, tmp_path, "a")))
    # the same stage where every digits source carries shuffled labels: nothing SCAN does may change
    original = DigitsSource.__init__

    def poisoned(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.labels = np.random.default_rng(1).permutation(self.labels)

    monkeypatch.setattr(DigitsSource, "__init__", poisoned)
    b = stage_scan(compose(copy_run(pretrained, tmp_path, "b")))
    assert np.load(b.path / "embeddings" / "test_projection" / "embeddings.npy").shape == (360, 16)
    assert json.loads((a.path / "metrics.json").read_text())["scan_backbone_nmi"] != \
        json.loads((b.path / "metrics.json").read_text())["scan_backbone_nmi"]  # the poison reached evaluation
    for key in KEYS:
        assert np.array_equal(np.load(a.path / "clusters" / key / "labels.npy"),
                              np.load(b.path / "clusters" / key / "labels.npy")), key
    assert np.array_equal(np.load(a.path / "scan" / "neighbors.npy"), np.load(b.path / "scan" / "neighbors.npy"))


def test_a_second_scan_stage_is_refused_without_resume_or_overwrite(pretrained, tmp_path):
    overrides = copy_run(pretrained, tmp_path, "a") + ["scan.selflabel.enabled=false", "scan.epochs=1"]
    stage_scan(compose(overrides))
    with pytest.raises(SSLClusterError, match="already has a SCAN stage.*scan.resume=last.*scan.overwrite=true"):
        stage_scan(compose(overrides))
    stage_scan(compose(overrides + ["scan.overwrite=true"]))


def test_validation_figures_score_the_chosen_head_and_leave_training_unchanged(pretrained, tmp_path):
    """scan.validation_every: val_nmi per epoch of the head the stage would choose, on evaluate.validation's rows
    of train; training (weights, head choice, assignments) exactly as without it."""
    from sslcluster.evaluation.metrics import external_metrics
    from sslcluster.stages.evaluate import validation_rows

    common = ["scan.selflabel.enabled=false", "clustering.split=train"]  # train assignments: the reference
    plain = stage_scan(compose(copy_run(pretrained, tmp_path, "plain") + common))
    scored = stage_scan(compose(copy_run(pretrained, tmp_path, "val") + common + ["scan.validation_every=1"]))
    key = "scan_backbone-train"
    assigned = np.load(plain.path / "clusters" / key / "labels.npy")
    assert np.array_equal(np.load(scored.path / "clusters" / key / "labels.npy"), assigned)
    curve = (scored.path / "clusters" / key / "curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in curve[1:]]
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["val_nmi"] != "" for r in rows)
    assert "val_nmi" not in (plain.path / "clusters" / key / "curve.csv").read_text()
    labels = DigitsSource(split="train").labels
    val = validation_rows(labels, 0.1, 0)
    want = external_metrics(labels[val], assigned[val])
    assert float(rows[-1]["val_nmi"]) == pytest.approx(want["nmi"], abs=1e-12)
    assert float(rows[-1]["val_acc"]) == pytest.approx(want["acc"], abs=1e-12)
    # a constant learning rate: epoch 1 of the 2-epoch run is the 1-epoch run (one run gives every candidate)
    short = stage_scan(compose(copy_run(pretrained, tmp_path, "short") + common
                               + ["scan.validation_every=1", "scan.epochs=1"]))
    lines = (short.path / "clusters" / key / "curve.csv").read_text().splitlines()
    assert dict(zip(lines[0].split(","), lines[1].split(",")))["val_nmi"] == rows[0]["val_nmi"]


@pytest.mark.parametrize("override, message", [
    ("scan.num_neighbors=1437", r"scan.num_neighbors=1437: more neighbours than the 1437 train images allow"),
    ("scan.num_clusters=1", r"scan.num_clusters=1 must be at least 2"),
    ("scan.entropy_weight=-1", r"scan.entropy_weight=-1(.0)? must be >= 0"),
    ("scan.num_neighbors=0", r"scan.num_neighbors=0 must be at least 1"),
    ("scan.validation_every=-1", r"scan.validation_every=-1 must be an integer >= 0"),
    ("scan.validation_every=ten", r"scan.validation_every='ten' must be an integer >= 0"),
])
def test_bad_settings_get_one_line_and_nothing_written(pretrained, tmp_path, override, message):
    overrides = copy_run(pretrained, tmp_path, "a")
    with pytest.raises(SSLClusterError, match=message) as e:
        stage_scan(compose(overrides + [override]))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "a" / "scan").exists() and not (tmp_path / "a" / "clusters").exists()


def test_confidence_cross_entropy_is_scans_balanced_masked_cross_entropy():
    weak = torch.tensor([[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 1.0, 1.0]])
    strong = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]])
    loss, n = confidence_cross_entropy(weak, strong, threshold=0.99, balance=True)
    # confident: rows 0, 1 (class 0) and 2 (class 1); weights n / count: class 0 1.5, class 1 3
    ce = -torch.log_softmax(strong, 1)
    w = torch.tensor([1.5, 1.5, 3.0])
    expected = (w * torch.stack([ce[0, 0], ce[1, 0], ce[2, 1]])).sum() / w.sum()
    assert int(n) == 3 and torch.allclose(loss, expected)
    plain, _ = confidence_cross_entropy(weak, strong, threshold=0.99, balance=False)
    assert torch.allclose(plain, torch.stack([ce[0, 0], ce[1, 0], ce[2, 1]]).mean())
    none, n0 = confidence_cross_entropy(weak, strong, threshold=0.9999999)
    assert int(n0) == 0 and float(none) == 0.0


# The child runs the SCAN stage; in SCAN's epoch 2 (index 1), after 3 steps, it writes a marker and sleeps, so the
# test's SIGKILL lands mid-epoch, after the end-of-epoch-1 checkpoint.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pytorch_lightning as pl
    from sslcluster.config import compose
    from sslcluster.pipeline import open_run
    from sslcluster.stages.scan import scan_stage

    marker = Path(sys.argv[1])

    class PauseMidEpoch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2 and trainer.max_epochs == 3:
                marker.write_text(str(trainer.global_step))
                time.sleep(120)

    cfg = compose(sys.argv[2:])
    with open_run(cfg, "scan", must_exist=True) as run:
        scan_stage(cfg, run, run.checkpoints_dir / "last.ckpt", callbacks=[PauseMidEpoch()])
""")


def test_scan_stage_killed_mid_epoch_resumes_to_the_uninterrupted_weights(pretrained, tmp_path):
    extra = ["scan.epochs=3"]
    killed = copy_run(pretrained, tmp_path, "killed") + extra
    script, marker = tmp_path / "child.py", tmp_path / "paused"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *killed], env=child_env(),
                            cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() - t0 < 300, "the child never reached SCAN's epoch 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpts = tmp_path / "killed" / "scan" / "checkpoints"
    assert torch.load(ckpts / "scan" / "last.ckpt", weights_only=False)["global_step"] == 4  # end of epoch 1
    assert not (ckpts / "selflabel").exists() and not (tmp_path / "killed" / "clusters").exists()
    resumed = stage_scan(compose(killed + ["scan.resume=last"]))
    straight = stage_scan(compose(copy_run(pretrained, tmp_path, "straight") + extra))
    for step, steps in (("scan", 12), ("selflabel", None)):  # self-labelling steps only where a target exists
        a = torch.load(straight.path / "scan" / "checkpoints" / step / "last.ckpt", weights_only=False)
        b = torch.load(resumed.path / "scan" / "checkpoints" / step / "last.ckpt", weights_only=False)
        assert a["global_step"] == b["global_step"] == (steps if steps is not None else a["global_step"])
        assert a["epoch"] == b["epoch"]
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (step, k)
    for key in KEYS:
        assert np.array_equal(np.load(straight.path / "clusters" / key / "labels.npy"),
                              np.load(resumed.path / "clusters" / key / "labels.npy"))
    curve = (resumed.path / "clusters" / KEYS[0] / "curve.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in curve[1:]] == ["1", "2", "3"]  # the killed run's epoch 1 kept


def test_resume_without_a_scan_checkpoint_is_refused(pretrained, tmp_path):
    with pytest.raises(SSLClusterError, match="scan.resume=last: no checkpoint"):
        stage_scan(compose(copy_run(pretrained, tmp_path, "a") + ["scan.resume=last"]))


@pytest.mark.slow
@needs_gloo
def test_scan_stage_under_two_process_ddp(tmp_path):
    """``train.py trainer.devices=2 stages.scan=true`` (Lightning's DDP, 2 CPU processes): both processes train
    SCAN's steps into the one run; rank 0 alone writes the clusterings, each once, scored in metrics.json."""
    args = [sys.executable, str(Path(__file__).resolve().parents[2] / "train.py"), f"run.root={tmp_path / 'runs'}",
            "run.key=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *MODEL, "+trainer.limit_train_batches=2",
            "clustering.algorithm.n_init=1", "evaluate.linear_probe=false", "stages.baseline=false",
            "evaluate.plots.enabled=false", "report.enabled=false", "stages.scan=true", "scan.epochs=1",
            "scan.batch_size=32", "scan.selflabel.epochs=1", "scan.selflabel.batch_size=32",
            "scan.selflabel.confidence_threshold=0.2"]
    env = child_env()
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    ckpt = torch.load(run / "scan" / "checkpoints" / "scan" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2  # trainer.limit_train_batches=2 steps per epoch, one epoch
    ckpt = torch.load(run / "scan" / "checkpoints" / "selflabel" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] <= 2  # a step only on batches with a confident image on some process
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"scan_backbone_nmi", "scan_selflabel_nmi"} <= set(metrics)
    assert sorted(p.name for p in (run / "clusters").iterdir()) == ["kmeans-test", *KEYS]


def test_selflabel_without_a_confident_image_leaves_the_weights(tmp_path):
    """No weak view above the threshold: no optimiser step, so Adam's weight decay alone moves nothing."""
    import pytorch_lightning as pl

    from sslcluster.ssl.backbones import TinyCNN
    from sslcluster.ssl.scan import ClusteringModel, SelfLabelModule

    torch.manual_seed(0)
    model = ClusteringModel(TinyCNN(1, width=4, depth=1, norm="none"), num_clusters=3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.randn(16, 1, 8, 8)
    data = torch.utils.data.TensorDataset(x, x + 0.1 * torch.randn_like(x), torch.arange(16))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(SelfLabelModule(model, confidence_threshold=0.999999), torch.utils.data.DataLoader(data, batch_size=8))
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k


def test_scan_epochs_default_is_the_data_configs_choice():
    """digits: step 2's epochs chosen on validation (configs/data/digits.yaml); elsewhere SCAN's CIFAR-10 50."""
    assert compose([]).scan.epochs == 200
    assert compose(["data=image_folder", "data.source.root=x"]).scan.epochs == 50
    assert compose(["scan.epochs=7"]).scan.epochs == 7


def test_scan_stage_command_on_an_image_folder_run_takes_the_runs_decided_defaults(tmp_path):
    """``sslcluster scan`` on a run of an image folder (data.precision and the views left ``auto``) takes the run's
    decisions, as every stage command does; it stopped with "Precision 'auto' is invalid"."""
    from sslcluster.store.runconfig import read_run_config
    from ssl_helpers import make_image_folder

    folder = make_image_folder(tmp_path / "imgs", per_class=40, size=16)
    overrides = [f"run.root={tmp_path / 'runs'}", "run.key=f", "data=image_folder", f"data.source.root={folder}",
                 "data.num_workers=0", "data.batch_size=32", "data.scan.cache=false", *MODEL[2:], *SCAN]
    stage_pretrain(compose([*overrides, "trainer.max_epochs=1"]))
    decided = read_run_config(tmp_path / "runs" / "f")["data"]["precision"]
    run = stage_scan(compose(overrides + ["scan.num_neighbors=5"]))
    assert decided in ("bf16-mixed", "32-true")
    assert json.loads((run.path / "clusters" / KEYS[0] / "record.json").read_text())["status"] == "complete"
