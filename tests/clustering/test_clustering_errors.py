"""Bad input to the cluster and evaluate stages: one clear SSLClusterError naming the value, and nothing written
as if it had succeeded (the cluster folder is removed, metrics are not written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sslcluster.cli import main
from sslcluster.clustering.som import SOM
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_cluster, stage_evaluate
from sslcluster.stages.evaluate import evaluate_clustering
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.rundir import RunDir


def make_run(root: Path, x: np.ndarray, labels: np.ndarray | None = None, key: str = "r") -> Path:
    """A run directory holding ``x`` (N, D) as its test embeddings, digits images as the paths."""
    run = RunDir.create(root, key)
    n = x.shape[0]
    labels = np.arange(n) % 3 if labels is None else labels
    index = EmbeddingIndex([f"s{i}" for i in range(n)], [f"sklearn:load_digits[{i}]" for i in range(n)],
                           np.asarray(labels, dtype=np.int64))
    write_embeddings(run.embeddings_dir("test"), x.astype(np.float32), index, features="test")
    return run.path


def blobs(n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 8)) + np.repeat(np.eye(8)[:3] * 6, n // 3, axis=0)).astype(np.float32)


@pytest.fixture
def base(tmp_path):
    return [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.plots.enabled=false",
            "evaluate.linear_probe=false"]


def assert_nothing_written(run: Path, key: str = "kmeans-test") -> None:
    assert not (run / "clusters" / key).exists()
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused(tmp_path, base, bad):
    x = blobs()
    x[3, 1] = bad
    x[7, 0] = bad
    run = make_run(tmp_path / "runs", x)
    with pytest.raises(SSLClusterError, match=r"2 embedding rows contain NaN or inf \(first rows: \[3, 7\]\)"):
        stage_cluster(compose(base + ["clustering.algorithm.k=3"]))
    assert_nothing_written(run)


def test_k_larger_than_samples_is_refused(tmp_path, base, capsys):
    run = make_run(tmp_path / "runs", blobs(30))
    with pytest.raises(SSLClusterError, match=r"clustering.algorithm.k=50 is larger than the number of samples \(30\)"):
        stage_cluster(compose(base + ["clustering.algorithm.k=50"]))
    assert_nothing_written(run)
    # through the console script: exit code 2, one line naming the value
    assert main(["cluster", *base, "clustering=gmm", "clustering.algorithm.k=31"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "k=31" in err and "(30)" in err
    assert_nothing_written(run, "gmm-test")


def test_empty_embeddings_file_is_refused(tmp_path, base):
    run = make_run(tmp_path / "runs", blobs(30))
    arr = run / "embeddings" / "test" / "embeddings.npy"
    arr.write_bytes(b"")
    with pytest.raises(SSLClusterError, match=f"{arr}: not a readable .npy array"):
        stage_cluster(compose(base))
    assert_nothing_written(run)
    np.save(arr, np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(SSLClusterError, match=r"expected a non-empty \(N, D\) array, got shape \(0, 8\)"):
        stage_cluster(compose(base))
    assert_nothing_written(run)


def test_labels_file_of_wrong_length_is_refused(tmp_path, base):
    run = make_run(tmp_path / "runs", blobs(30))
    stage_cluster(compose(base + ["clustering.algorithm.k=3"]))
    cdir = run / "clusters" / "kmeans-test"
    labels_csv = tmp_path / "labels.csv"
    rows = [f"s{i},{i % 3}" for i in range(30)] + ["extra,1"]
    labels_csv.write_text("id,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(SSLClusterError, match=f"{labels_csv}: 31 label rows .* for 30 embeddings"):
        stage_evaluate(compose(base + [f"evaluate.labels={labels_csv}"]))
    labels_csv.write_text("id,label\n" + "\n".join(rows[:20]) + "\n")
    with pytest.raises(SSLClusterError, match=f"{labels_csv}: 10 of 30 embedding ids have no label"):
        stage_evaluate(compose(base + [f"evaluate.labels={labels_csv}"]))
    assert not (cdir / "metrics.json").exists() and not (run / "metrics.json").exists()
    # a labels.npy of the wrong length (a clustering of another set) is refused too
    np.save(cdir / "labels.npy", np.zeros(29, dtype=np.int64))
    with pytest.raises(SSLClusterError, match=r"labels.npy \(29 rows\) does not match"):
        evaluate_clustering(compose(base), cdir)
    assert not (cdir / "metrics.json").exists()


def test_all_points_noise_is_refused(tmp_path, base):
    run = make_run(tmp_path / "runs", blobs(30))
    with pytest.raises(SSLClusterError, match="labelled every point as noise"):
        stage_cluster(compose(base + ["clustering=dbscan", "clustering.algorithm.eps=1e-6"]))
    assert_nothing_written(run, "dbscan-test")


@pytest.mark.parametrize("override,message", [
    ("clustering.algorithm.grid=[2,2]", r"grid=\[2, 2\] has 4 nodes, fewer than clustering.algorithm.k=10"),
    ("clustering.algorithm.sigma=0", r"clustering.algorithm.sigma=0 must be positive"),
    ("clustering.algorithm.sigma=-1.5", r"clustering.algorithm.sigma=-1.5 must be positive"),
    ("clustering.algorithm.learning_rate=0.0", r"clustering.algorithm.learning_rate=0.0 must be positive"),
    ("clustering.algorithm.learning_rate=-0.1", r"clustering.algorithm.learning_rate=-0.1 must be positive"),
    ("clustering.algorithm.init=spiral", r"clustering.algorithm.init='spiral'"),
    ("clustering.algorithm.mode=nodes", r"clustering.algorithm.mode='nodes'"),
])
def test_bad_som_settings_are_refused(tmp_path, base, override, message):
    run = make_run(tmp_path / "runs", blobs(30))
    with pytest.raises(SSLClusterError, match=message):
        stage_cluster(compose(base + ["clustering=som", override]))
    assert_nothing_written(run, "som-test")
    assert not (run / "clusters").exists() or not any((run / "clusters").iterdir())


def test_bad_som_direct():
    with pytest.raises(SSLClusterError, match=r"grid=\[3, 3\] has 9 nodes, fewer than clustering.algorithm.k=12"):
        SOM(grid=[3, 3], k=12).fit_predict(blobs(30))
    with pytest.raises(SSLClusterError, match=r"grid=\[0, 3\]"):
        SOM(grid=[0, 3], mode="node").fit_predict(blobs(30))


@pytest.mark.parametrize("overrides,message", [
    (["clustering.select_k.method=gap"], r"clustering.select_k.method='gap'"),
    (["clustering.select_k.method=elbow", "clustering.select_k.k_max=30"],
     r"clustering.select_k.k_max=30 must be smaller than the number of samples \(30\)"),
    (["clustering.select_k.method=silhouette", "clustering.select_k.k_min=1"], r"k_min=1: the silhouette"),
    (["clustering.select_k.method=bic"], r"method=bic needs a Gaussian mixture"),
    (["clustering=hdbscan", "clustering.preprocess.umap_dim=null", "clustering.select_k.method=silhouette"],
     r"HDBSCAN has no k to choose"),
])
def test_bad_k_selection_is_refused(tmp_path, base, overrides, message):
    run = make_run(tmp_path / "runs", blobs(30))
    with pytest.raises(SSLClusterError, match=message):
        stage_cluster(compose(base + overrides))
    assert not (run / "clusters").exists() or not any((run / "clusters").iterdir())


def test_bad_algorithm_parameters_name_the_key(tmp_path, base):
    make_run(tmp_path / "runs", blobs(30))
    for overrides, message in (
            (["clustering=agglomerative", "clustering.algorithm.linkage=centroid"],
             r"clustering.algorithm.linkage='centroid': use one of ward, average, complete, single"),
            (["clustering.algorithm.backend=gpu"], r"clustering.algorithm.backend='gpu'"),
            (["clustering=dbscan", "clustering.algorithm.eps=0"], r"clustering.algorithm.eps=0 must be positive"),
            (["clustering=hdbscan", "clustering.algorithm.min_cluster_size=1"], r"min_cluster_size=1"),
            (["clustering=gmm", "clustering.algorithm.covariance_type=round"], r"covariance_type='round'"),
    ):
        with pytest.raises(SSLClusterError, match=message):
            stage_cluster(compose(base + overrides))


def test_failed_recluster_of_an_existing_run_keeps_the_run(tmp_path, base):
    run = make_run(tmp_path / "runs", blobs(30))
    stage_cluster(compose(base + ["clustering.algorithm.k=3", "clustering.key=good"]))
    with pytest.raises(SSLClusterError):
        stage_cluster(compose(base + ["clustering.algorithm.k=99", "clustering.key=bad"]))
    assert (run / "embeddings" / "test" / "manifest.json").exists()
    assert json.loads((run / "clusters" / "good" / "record.json").read_text())["status"] == "complete"
    assert not (run / "clusters" / "bad").exists()


def test_labels_never_reach_clustering(tmp_path, base):
    """The cluster stage does not parse held-out labels: garbage in the label column does not disturb it (and
    the same clustering results whatever the labels), while evaluation, which reads them, refuses it."""
    x = blobs(30)
    run = make_run(tmp_path / "runs", x)
    index = run / "embeddings" / "test" / "index.csv"
    lines = index.read_text().splitlines()
    index.write_text("\n".join([lines[0]] + [ln.rsplit(",", 1)[0] + ",not-a-label" for ln in lines[1:]]) + "\n")
    stage_cluster(compose(base + ["clustering=som", "clustering.algorithm.k=3", "clustering.algorithm.grid=[4,4]",
                                  "clustering.algorithm.iterations=300", "clustering.key=a"]))
    other = make_run(tmp_path / "runs", x, labels=np.arange(30) % 5, key="r2")
    stage_cluster(compose([o.replace("run.key=r", "run.key=r2") for o in base]
                          + ["clustering=som", "clustering.algorithm.k=3", "clustering.algorithm.grid=[4,4]",
                             "clustering.algorithm.iterations=300", "clustering.key=a"]))
    assert np.array_equal(np.load(run / "clusters" / "a" / "labels.npy"),
                          np.load(other / "clusters" / "a" / "labels.npy"))
    with pytest.raises(SSLClusterError, match="'not-a-label'"):
        stage_evaluate(compose(base + ["clustering.key=a"]))
