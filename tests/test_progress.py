"""Progress of long steps: a bar with rate and time left on a terminal, a log line every few percent elsewhere,
on any trainer (trainer=cpu switches Lightning's own bar off)."""

from __future__ import annotations

import logging
import re

from sslcluster import progress as prog
from sslcluster.config import compose
from sslcluster.pipeline import stage_pretrain


def test_log_progress_writes_a_line_at_most_every_five_percent(caplog):
    caplog.set_level(logging.INFO, logger="sslcluster.progress")
    bar = prog.LogProgress(1000, "export", unit="img", every=0.05)
    for _ in range(1000):
        bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20, lines  # 5%, 10%, ... 100%
    assert lines[0].startswith("export: 5% (50/1000 img)") and lines[-1].startswith("export: 100% (1000/1000 img)")
    assert all(re.search(r"[\d.]+ img/s, \d+:\d\d elapsed, \d+:\d\d left", m) for m in lines)


def test_resumed_progress_counts_from_where_it_was(caplog):
    caplog.set_level(logging.INFO, logger="sslcluster.progress")
    bar = prog.LogProgress(100, "export", unit="img", initial=60, every=0.25)
    bar.update(20)  # 80%: past the 75% mark
    bar.update(20)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["export: 80% (80/100 img)",
                                                                     "export: 100% (100/100 img)"]


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setenv("SSLCLUSTER_PROGRESS", "tty")
    from tqdm import tqdm

    bar = prog.progress(10, "x")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("SSLCLUSTER_PROGRESS", "log")
    assert isinstance(prog.progress(10, "x"), prog.LogProgress)


def test_training_on_the_cpu_trainer_reports_progress(tiny, caplog, monkeypatch):
    monkeypatch.setenv("SSLCLUSTER_PROGRESS", "log")
    caplog.set_level(logging.INFO, logger="sslcluster.progress")
    cfg = compose(tiny + ["trainer=cpu", "trainer.max_epochs=2", "+trainer.limit_train_batches=4",
                          "monitor.knn=false", "monitor.linear=false"])
    assert not cfg.trainer.enable_progress_bar  # Lightning's bar is off on this trainer
    stage_pretrain(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training:")]
    assert lines and lines[-1].startswith("training: 100% (8/8 step)") and " step/s, " in lines[-1]
    assert len(lines) <= 20


def test_umap_before_clustering_says_what_it_does_and_how_long_it_took(caplog, monkeypatch):
    """UMAP of the clustering preprocess can take minutes at scale: in a log it is announced and timed."""
    import numpy as np

    from sslcluster.clustering.preprocess import PreprocessConfig, preprocess

    monkeypatch.setenv("SSLCLUSTER_PROGRESS", "log")
    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="sslcluster.progress"):
        out = preprocess(x, PreprocessConfig(umap_dim=3, umap_neighbors=5))
    assert out.shape == (60, 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "sslcluster.progress"]
    assert lines[0] == "clustering preprocess: UMAP of 60 x 8 features to 3-D", lines
    assert re.fullmatch(r"clustering preprocess: UMAP done in \d+:\d\d", lines[1]), lines


def test_linear_probe_reports_progress_with_rate_and_time_left(caplog, monkeypatch):
    """The torch probe's fits (one per weight decay, then the refit) count towards one bar that ends at 100%."""
    import numpy as np

    from sslcluster.evaluation.probes import lbfgs_evaluations, linear_probe

    monkeypatch.setenv("SSLCLUSTER_PROGRESS", "log")
    caplog.set_level(logging.INFO, logger="sslcluster.progress")
    rng = np.random.default_rng(0)
    x, tx = rng.normal(size=(400, 16)).astype(np.float32), rng.normal(size=(100, 16)).astype(np.float32)
    y, ty = (x[:, :3].sum(1) > 0).astype(np.int64), (tx[:, :3].sum(1) > 0).astype(np.int64)
    linear_probe(x, y, tx, ty, weight_decays=(1e-2, 1e-4), max_iter=40)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "sslcluster.progress" and r.getMessage().startswith("linear probe:")]
    budget = 3 * lbfgs_evaluations(40)
    assert lines and lines[-1].startswith(f"linear probe: 100% ({budget}/{budget} eval)"), lines
    assert all(re.search(r"[\d.]+ eval/s, \d+:\d\d elapsed, \d+:\d\d left", m) for m in lines)
