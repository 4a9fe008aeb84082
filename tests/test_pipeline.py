"""End to end on digits (kept short), each stage alone on another run's output, and the run directory."""

import json

import numpy as np
import pytest
import yaml

from sslcluster.cli import main
from sslcluster.config import compose
from sslcluster.pipeline import run_pipeline, stage_cluster, stage_evaluate, stage_export, stage_pretrain
from sslcluster.store.embeddings import read_embeddings

REQUIRED_METRICS = ("nmi", "ari", "acc", "intra_var", "inter_var", "knn_top1", "n_clusters")


def test_end_to_end_run_directory(tiny, capsys):
    run = run_pipeline(compose(tiny + ["run.key=e2e", "clustering.features=projection"]))
    out = capsys.readouterr().out
    assert "run key: e2e" in out and "nmi" in out and "pixels" in out
    p = run.path
    cfg = yaml.safe_load((p / "config.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] == 1 and cfg["seed"] == 0
    metrics = json.loads((p / "metrics.json").read_text())
    for key in REQUIRED_METRICS:
        assert key in metrics and f"pixels_{key}" in metrics, key
    assert metrics["n_clusters"] == 10
    # the run's figures are those of its files: recomputed from labels.npy and index.csv
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from tests.evaluation.test_metrics import reference_hungarian

    truth = read_embeddings(p / "embeddings" / "test_projection", with_labels=True).index.labels
    pred = np.load(p / "clusters" / "kmeans-test" / "labels.npy")
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-12)
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-12)
    assert metrics["acc"] == pytest.approx(reference_hungarian(truth, pred), abs=1e-12)
    assert metrics["nmi"] > 0.2 and metrics["knn_top1"] > 0.5  # one epoch on digits: far above chance (0.1)
    assert (p / "checkpoints" / "last.ckpt").is_file()
    for split in ("train", "test", "test_projection", "pixels_train", "pixels_test"):
        es = read_embeddings(p / "embeddings" / split, with_labels=True)
        assert es.manifest["status"] == "complete"
        assert es.array.dtype == np.float32 and es.array.shape[0] == len(es.index.ids)
        assert (es.index.labels >= 0).all()
    # labels are kept apart from the embeddings: only index.csv holds them
    header = (p / "embeddings" / "test" / "index.csv").read_text().splitlines()[0]
    assert header == "id,path,label"
    labels = np.load(p / "clusters" / "kmeans-test" / "labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (360,)
    rec = json.loads((p / "clusters" / "kmeans-test" / "record.json").read_text())
    assert rec["status"] == "complete" and rec["algorithm"] == "kmeans" and rec["features"] == "projection"
    assert rec["embeddings"].endswith("test_projection")
    pix = json.loads((p / "clusters" / "pixels-kmeans-test" / "record.json").read_text())
    assert pix["features"] == "pixels" and pix["preprocess"] == rec["preprocess"]  # the baseline: same clustering
    assert not list(p.rglob("*.tmp"))


def test_each_stage_alone_on_another_runs_output(tiny, tmp_path, capsys):
    cfg = compose(tiny + ["run.key=a"])
    stage_pretrain(cfg)
    ckpt = tmp_path / "runs" / "a" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    # export from run a's checkpoint into a new run b
    stage_export(compose(tiny + ["run.key=b", f"checkpoint={ckpt}"]))
    b = tmp_path / "runs" / "b"
    assert (b / "embeddings" / "test" / "manifest.json").is_file()
    # cluster run b's embeddings, then evaluate them
    stage_cluster(compose(tiny + ["run.key=b"]))
    assert (b / "clusters" / "kmeans-test" / "labels.npy").is_file()
    stage_evaluate(compose(tiny + ["run.key=b"]))
    m = json.loads((b / "metrics.json").read_text())
    assert "nmi" in m and "knn_top1" in m
    # cluster another run's embeddings by path into a fresh run
    stage_cluster(compose(tiny + ["run.key=c", f"embeddings={b / 'embeddings' / 'test'}",
                                  "clustering.key=from-b", "clustering.algorithm.k=5"]))
    rec = json.loads((tmp_path / "runs" / "c" / "clusters" / "from-b" / "record.json").read_text())
    assert rec["params"]["k"] == 5


def test_existing_cluster_key_is_refused(tiny, tmp_path):
    stage_export_run = compose(tiny + ["run.key=r", "stages.baseline=false", "stages.cluster=false"])
    run_pipeline(stage_export_run)
    stage_cluster(compose(tiny + ["run.key=r"]))
    assert main(["cluster", *tiny, "run.key=r"]) == 2


def test_cli_missing_checkpoint_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys):
    code = main(["run", *tiny, "checkpoint=/nonexistent/last.ckpt"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "/nonexistent/last.ckpt" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_unknown_key_and_group(tiny, capsys):
    assert main(["run", *tiny, "nosuchkey=1"]) == 2
    assert "nosuchkey" in capsys.readouterr().err
    assert main(["pretrain", *tiny, "backbone=nosuchnet"]) == 2
    err = capsys.readouterr().err
    assert "nosuchnet" in err and "tiny_cnn" in err


def test_mismatched_labels_file_is_refused(tiny, tmp_path, capsys):
    run_pipeline(compose(tiny + ["run.key=m", "stages.baseline=false"]))
    bad = tmp_path / "labels.csv"
    bad.write_text("id,label\nnot-an-id,3\n")
    before = (tmp_path / "runs" / "m" / "metrics.json").read_text()
    assert main(["evaluate", *tiny, "run.key=m", f"evaluate.labels={bad}"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "do not match" in err.replace("does not match", "do not match")
    assert (tmp_path / "runs" / "m" / "metrics.json").read_text() == before


def test_embeddings_rows_not_matching_ids_is_refused(tiny, tmp_path, capsys):
    run_pipeline(compose(tiny + ["run.key=x", "stages.baseline=false", "stages.cluster=false"]))
    emb = tmp_path / "runs" / "x" / "embeddings" / "test"
    lines = (emb / "index.csv").read_text().splitlines()
    (emb / "index.csv").write_text("\n".join(lines[:-5]) + "\n")
    assert main(["cluster", *tiny, f"embeddings={emb}", "run.key=y"]) == 2
    err = capsys.readouterr().err
    assert "index.csv" in err and str(emb) in err
    assert not (tmp_path / "runs" / "y").exists()


def test_new_run_with_existing_key_is_refused(tiny, tmp_path, capsys):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "keep.txt").write_text("x")
    assert main(["run", *tiny, "run.key=taken"]) == 2
    assert "taken" in capsys.readouterr().err
    assert (tmp_path / "runs" / "taken" / "keep.txt").exists()


def test_evaluating_another_clustering_keeps_the_runs_summary(tiny, tmp_path, capsys):
    run = run_pipeline(compose(tiny + ["run.key=s"]))
    before = json.loads((run.path / "metrics.json").read_text())
    stage_cluster(compose(tiny + ["run.key=s", "clustering=gmm", "clustering.key=gmm5", "clustering.algorithm.k=5"]))
    stage_evaluate(compose(tiny + ["run.key=s", "clustering.key=gmm5"]))
    after = json.loads((run.path / "metrics.json").read_text())
    for key in ("nmi", "ari", "acc", "n_clusters", "pixels_nmi"):
        assert after[key] == before[key], key  # still the run's own k-means and its baseline
    gmm = json.loads((run.path / "clusters" / "gmm5" / "metrics.json").read_text())
    assert gmm["n_clusters"] == 5
    # re-evaluating everything also leaves the summary on the run's own clustering
    stage_evaluate(compose(tiny + ["run.key=s"]))
    assert json.loads((run.path / "metrics.json").read_text())["n_clusters"] == before["n_clusters"] == 10


def test_pipeline_exports_what_scan_reads_and_fits_on_train(tiny):
    """``python train.py clustering=scan clustering.fit_split=train``: the run exports the train split's backbone
    features (what the heads read) and its projection features (where SCAN mines neighbours), the heads are
    fitted on train and assign test, and the pixels baseline is fitted on its own train split."""
    base = [o for o in tiny if not o.startswith(("clustering.algorithm.n_init", "clustering.features"))]
    run = run_pipeline(compose(base + ["run.key=scan", "clustering=scan", "clustering.fit_split=train",
                                       "clustering.algorithm.epochs=2", "clustering.algorithm.num_heads=2",
                                       "clustering.algorithm.num_neighbors=5", "clustering.algorithm.device=cpu"]))
    rec = json.loads((run.path / "clusters" / "scan-test" / "record.json").read_text())
    assert (rec["embeddings"], rec["fit_embeddings"], rec["mine_embeddings"]) == \
        ("embeddings/test", "embeddings/train", "embeddings/train_projection")
    assert (run.path / "clusters" / "scan-test" / "curve.csv").is_file()
    pixels = json.loads((run.path / "clusters" / "pixels-scan-test" / "record.json").read_text())
    assert pixels["fit_embeddings"] == "embeddings/pixels_train" and "mine_embeddings" not in pixels
    assert "nmi" in json.loads((run.path / "metrics.json").read_text())
