"""logger=wandb, offline: what lands in the W&B run files (read back from the .wandb file), the per-cluster table,
the evaluation-only run, the mode fallback without credentials, and rank-zero-only logging."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import run_pipeline, stage_evaluate
from sslcluster.stages.report import format_table
from sslcluster.store.embeddings import read_index
from wandb_reader import offline_runs, read_offline_run

from sslcluster.tracking.wandb_log import Tracker, cluster_rows


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """One tiny pipeline run with logger=wandb (offline), its stdout and its offline W&B folder."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("wb")
    overrides = [f"run.root={root / 'runs'}", "trainer.max_epochs=1", "data.batch_size=64",
                 "backbone.module.width=8", "backbone.module.depth=2", "logger=wandb",
                 "clustering.algorithm.n_init=1", "evaluate.linear_probe=false", "export.batch_size=256",
                 "run.key=wb", "logger.group=ablation-a", "logger.tags=[t1,t2]"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        run = run_pipeline(compose(overrides))
    return run, buf.getvalue(), overrides


def test_offline_run_holds_config_summary_curves_and_table(wandb_run):
    run, out, _ = wandb_run
    folders = offline_runs(run.path)
    assert len(folders) == 1, folders
    folder = folders[0]
    # the pipeline says where the offline files are and how to upload them
    assert str(folder) in out and f"wandb sync {folder}" in out
    info = read_offline_run(folder, wait_s=60)
    assert info["complete"], "no exit record in the .wandb file"
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert info["project"] == "sslcluster" and info["group"] == "ablation-a" and info["name"] == "wb"
    assert info["tags"] == ["t1", "t2"] and info["job_type"] == "train"
    # the resolved config, as written to the run directory
    assert info["config"]["trainer"] == cfg["trainer"] and info["config"]["seed"] == cfg["seed"] == 0
    assert info["config"]["clustering"]["algorithm"]["k"] == 10
    # training curves in the history, final metrics as summary values (learned and baseline)
    assert {"train/loss_step", "train/lr"} <= info["history_keys"]
    for key in ("nmi", "ari", "acc", "knn_top1", "pixels_nmi"):
        assert info["summary"][key] == pytest.approx(metrics[key]), key
    # one table per clustering, one row per cluster
    table = info["summary"]["clusters/kmeans-test"]
    assert table["_type"] == "table-file" and table["nrows"] == 10
    data = json.loads((folder / "files" / table["path"]).read_text())
    assert data["columns"][:3] == ["cluster", "size", "samples"] and "purity" in data["columns"]
    sizes = [row[data["columns"].index("size")] for row in data["data"]]
    assert sum(sizes) == 360 and sizes == sorted(sizes, reverse=True)
    assert "clusters/pixels-kmeans-test" in info["summary"]
    # the console's summary table, row for row (evaluation.registry's headline metrics)
    summary = json.loads((folder / "files" / info["summary"]["metrics"]["path"]).read_text())
    assert [row[0] for row in summary["data"]] == [line.split()[0] for line in format_table(metrics).splitlines()[2:]]
    assert summary["columns"][:3] == ["metric", "learned", "pixels"]
    assert not list(run.path.rglob("*.tmp"))


def test_offline_run_holds_the_embeddings_tables(wandb_run):
    """W&B's 2-D projection panel needs a table of numeric emb_* columns: one per clustering, learned and pixels."""
    run, _, _ = wandb_run
    folder = offline_runs(run.path)[0]
    info = read_offline_run(folder, wait_s=60)
    for key, emb in (("kmeans-test", "test_projection"), ("pixels-kmeans-test", "pixels_test")):
        meta = info["summary"][f"embeddings/{key}"]
        assert meta["_type"] == "table-file"
        # W&B logs a table with images as a run_table artifact: the table file and every image, staged on disk
        # until `wandb sync` uploads them
        art = [a for a in info["artifacts"] if a["type"] == "run_table"
               and f"embeddings/{key}.table.json" in a["entries"]]
        assert len(art) == 1, [a["name"] for a in info["artifacts"]]
        entries = art[0]["entries"]
        data = json.loads(Path(entries[f"embeddings/{key}.table.json"]).read_text())
        x = np.load(run.path / "embeddings" / emb / "embeddings.npy")
        index = read_index(run.path / "embeddings" / emb, with_labels=True)
        pred = np.load(run.path / "clusters" / key / "labels.npy")
        d = x.shape[1]
        assert data["columns"] == [*(f"emb_{i}" for i in range(d)), "cluster", "name", "label", "thumbnail"]
        assert len(data["data"]) == meta["nrows"] == 360  # under logger.max_embedding_rows: every row
        got = np.asarray([row[:d] for row in data["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, x, rtol=1e-6)
        assert [row[d] for row in data["data"]] == pred.tolist()
        assert [row[d + 2] for row in data["data"]] == [index.classes[k] for k in index.labels]
        thumbs = [row[d + 3] for row in data["data"]]
        assert all(t["_type"] == "image-file" and Path(entries[t["path"]]).is_file() for t in thumbs)
        with Image.open(entries[thumbs[0]["path"]]) as im:
            assert im.size == (32, 32)


def test_embeddings_table_is_a_bounded_seeded_sample(wandb_run):
    from sslcluster.tracking.wandb_log import embedding_rows

    run, _, _ = wandb_run
    cdir = run.path / "clusters" / "kmeans-test"
    cols, rows, paths = embedding_rows(cdir, 50, seed=0)
    again = embedding_rows(cdir, 50, seed=0)
    other = embedding_rows(cdir, 50, seed=1)
    assert len(rows) == len(paths) == 50 and rows == again[1] and paths != other[2]
    index = read_index(run.path / "embeddings" / "test_projection")
    picked = [index.paths.index(p) for p in paths]
    assert picked == sorted(picked) and len(set(picked)) == 50


def test_cluster_rows_purity_matches_labels(wandb_run):
    run, _, _ = wandb_run
    cdir = run.path / "clusters" / "kmeans-test"
    pred = np.load(cdir / "labels.npy")
    truth = read_index(run.path / "embeddings" / "test", with_labels=True).labels
    rows = cluster_rows(cdir, samples=3)
    assert sorted(r.cluster for r in rows) == sorted(set(pred.tolist()))
    for r in rows:
        members = truth[pred == r.cluster]
        assert r.size == len(members)
        assert r.purity == pytest.approx(Counter(members.tolist()).most_common(1)[0][1] / len(members))
        assert len(r.sample_paths) == min(3, r.size) and all(p.startswith("sklearn:") for p in r.sample_paths)


def test_evaluation_only_run_logs_pictures_and_names(wandb_run):
    """The evaluate stage (no training in the process) logs into a new W&B run (job_type evaluate), same group."""
    run, _, overrides = wandb_run
    cdir = run.path / "clusters" / "kmeans-test"
    plots = cdir / "plots"
    plots.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(plots / "umap.png")
    pred = np.load(cdir / "labels.npy")
    big = int(np.bincount(pred).argmax())
    # names.json as the naming stage writes it (sslcluster.naming: clusters by id, for these labels.npy)
    labels_sha = hashlib.sha256((cdir / "labels.npy").read_bytes()).hexdigest()
    (cdir / "names.json").write_text(json.dumps({"labels_sha256": labels_sha, "clusters": {
        str(big): {"name": "loops", "description": "round digits"}}}))
    before = set(offline_runs(run.path))
    stage_evaluate(compose(overrides))  # `sslcluster evaluate run.key=wb logger=wandb`
    new = [f for f in offline_runs(run.path) if f not in before]
    assert len(new) == 1
    info = read_offline_run(new[0], wait_s=60)
    assert info["complete"]
    assert info["job_type"] == "evaluate" and info["group"] == "ablation-a" and info["name"] == "wb"
    assert "plots/kmeans-test/umap" in info["history_keys"]
    assert info["summary"]["nmi"] == pytest.approx(run.read_metrics()["nmi"])
    table = info["summary"]["clusters/kmeans-test"]
    data = json.loads((new[0] / "files" / table["path"]).read_text())
    named = [row for row in data["data"] if row[0] == big]
    assert named and named[0][data["columns"].index("name")] == "loops"
    assert named[0][data["columns"].index("description")] == "round digits"


def test_online_without_credentials_falls_back_to_offline(monkeypatch, tmp_path, caplog):
    from sslcluster.tracking.loggers import wandb_mode

    cfg = compose(["logger=wandb"])
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with caplog.at_level(logging.WARNING):
        assert wandb_mode(cfg) == "offline"
    assert "no credentials" in caplog.text
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(cfg) == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(cfg) == "offline"  # the config's default
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(SSLClusterError, match="WANDB_MODE='sideways'"):
        wandb_mode(cfg)


def test_other_ranks_log_nothing(monkeypatch, tmp_path):
    from pytorch_lightning.utilities import rank_zero_only

    from sslcluster.store.rundir import RunDir

    run = RunDir.create(tmp_path, "r")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    tracker = Tracker(compose(["logger=wandb"]), run)
    assert not tracker.enabled and tracker.log_final({"nmi": 0.5}) is None
    assert not (Path(run.path) / "wandb").exists()


def test_a_wandb_failure_after_evaluation_is_a_warning(monkeypatch, tmp_path, caplog):
    import wandb

    from sslcluster.store.rundir import RunDir

    run = RunDir.create(tmp_path, "r")
    run.update_metrics({"nmi": 0.5})

    def broken_init(**kwargs):
        raise RuntimeError("service unavailable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        assert Tracker(compose(["logger=wandb"]), run).log_final(run.read_metrics()) is None
    assert "service unavailable" in caplog.text and str(run.path) in caplog.text
