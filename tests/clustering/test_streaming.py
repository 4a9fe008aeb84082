"""Streaming k-means in the cluster stage: trained on a seeded sample of ``train_size`` rows, preprocessing fitted
on it, every row assigned in blocks, internal metrics on a fixed sample: the embeddings are never read whole.
Bad settings (train_size above N, a GPU faiss that is not installed) fail in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from sslcluster.cli import main
from sslcluster.clustering import kmeans
from sslcluster.clustering.base import train_rows
from sslcluster.clustering.kmeans import KMeans
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import cluster_metrics, quality_space
from sslcluster.pipeline import stage_cluster
from sslcluster.stages import cluster as cluster_stage
from sslcluster.store import embeddings as store_embeddings

from clustering.test_clustering_errors import assert_nothing_written, make_run


def planted(n: int, dim: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4
    y = np.arange(n) % k
    return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y


class RowReader:
    """A read-only (N, D) array that records the largest number of rows one read returned (stands in for the
    memory map: what one read returns is what it costs in memory)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.max_rows = 0

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, item):
        out = self.a[item]
        self.max_rows = max(self.max_rows, len(out) if np.ndim(out) else 1)
        return out

    def __array__(self, dtype=None, copy=None):
        self.max_rows = len(self.a)
        return self.a if dtype is None else self.a.astype(dtype)


@pytest.fixture
def base(tmp_path):
    return [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.plots.enabled=false",
            "evaluate.linear_probe=false"]


def test_stage_streams_the_embeddings_in_blocks(tmp_path, base, monkeypatch):
    x, y = planted(3000, 16, 6)
    run = make_run(tmp_path / "runs", x, y)
    readers: list[RowReader] = []
    real = store_embeddings.open_streaming

    def open_recorded(folder):
        manifest, rows, digest = real(folder)
        readers.append(RowReader(rows[:]))
        return manifest, readers[-1], digest

    monkeypatch.setattr(cluster_stage, "open_streaming", open_recorded, raising=False)
    monkeypatch.setattr(cluster_stage, "ASSIGN_BLOCK", 500, raising=False)
    monkeypatch.setattr(cluster_stage, "internal_rows", lambda labels: np.arange(0, len(labels), 3)[:800],
                        raising=False)
    stage_cluster(compose(base + ["clustering.algorithm.k=6", "clustering.algorithm.train_size=1000"]))
    assert readers and readers[0].max_rows <= 1000, f"a read of {readers[0].max_rows} rows"
    out = run / "clusters" / "kmeans-test"
    labels = np.load(out / "labels.npy")
    record = json.loads((out / "record.json").read_text())
    assert record["train_rows"] == 1000 and record["fit_info"]["trained_on"] == 1000
    assert normalized_mutual_info_score(y, labels) > 0.99


def test_row_file_reads_blocks_and_rows_as_a_memory_map_would(tmp_path):
    x = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    rows = store_embeddings.RowFile(tmp_path / "a.npy")
    assert rows.shape == (1000, 7) and len(rows) == 1000
    assert np.array_equal(rows[100:350], x[100:350]) and np.array_equal(rows[990:2000], x[990:])
    pick = np.array([5, 3, 4, 999, 0, 500, 501])
    assert np.array_equal(rows[pick], x[pick])


def test_row_file_gathers_scattered_rows_across_windows(tmp_path, monkeypatch):
    x = np.random.default_rng(1).standard_normal((1003, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    rows = store_embeddings.RowFile(tmp_path / "a.npy")
    monkeypatch.setattr(store_embeddings.RowFile, "WINDOW_BYTES", 7 * 5 * 4)  # 7 rows a window: 144 windows
    rng = np.random.default_rng(2)
    for pick in (rng.choice(1003, 400, replace=False), rng.integers(0, 1003, 50),  # duplicates too
                 np.array([1002, 0, 6, 7, 13, 14, 1001]), np.arange(1003)[::-1], np.array([], dtype=np.int64)):
        assert np.array_equal(rows[pick], x[pick])
    with pytest.raises(IndexError, match="rows outside 0..1002"):
        rows[np.array([3, 1003])]


def test_internal_metrics_are_those_of_the_whole_array_on_the_fixed_sample(tmp_path, base):
    x, y = planted(600, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    stage_cluster(compose(base + ["clustering.algorithm.k=3"]))
    out = run / "clusters" / "kmeans-test"
    labels = np.load(out / "labels.npy")
    quality = json.loads((out / "record.json").read_text())["quality"]
    expected = cluster_metrics(quality_space(x), labels, None)
    for key in ("silhouette", "davies_bouldin", "calinski_harabasz", "intra_var", "inter_var", "internal_n"):
        assert quality[key] == pytest.approx(expected[key], rel=1e-6)


def test_train_size_above_n_is_refused_in_one_line(tmp_path, base, capsys):
    x, y = planted(300, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    with pytest.raises(SSLClusterError, match=r"clustering.algorithm.train_size=500 is larger than the number of "
                                              r"points \(300\)"):
        stage_cluster(compose(base + ["clustering.algorithm.k=3", "clustering.algorithm.train_size=500"]))
    assert_nothing_written(run)
    assert main(["cluster", *base, "clustering.algorithm.k=3", "clustering.algorithm.train_size=301"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "clustering.algorithm.train_size=301" in err
    assert_nothing_written(run)


@pytest.mark.skipif(kmeans.faiss_gpus() > 0, reason="faiss sees a GPU here")
def test_gpu_faiss_asked_for_but_missing_is_one_line(tmp_path, base, capsys):
    x, y = planted(300, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    assert main(["cluster", *base, "clustering.algorithm.k=3", "clustering.algorithm.backend=faiss",
                 "clustering.algorithm.device=gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "clustering.algorithm.device=gpu" in err and "faiss" in err
    assert_nothing_written(run)


def test_default_kmeans_within_one_percent_nmi_of_ten_restarts_and_300_iterations():
    """The defaults (ten k-means++ starts of 50 iterations each) lose under 1% NMI to ten starts of 300."""
    x, y = planted(8_000, 16, 20, seed=1)
    for backend in ("sklearn", "faiss"):
        default = normalized_mutual_info_score(y, KMeans(k=20, backend=backend).fit_predict(x))
        thorough = normalized_mutual_info_score(y, KMeans(k=20, backend=backend, n_init=10, max_iter=300)
                                                .fit_predict(x))
        assert default >= thorough - 0.01, (backend, default, thorough)


def test_sample_then_assign_equals_an_in_memory_fit_on_the_same_rows():
    x, y = planted(5000, 8, 5)
    a = KMeans(k=5, train_size=2000, backend="sklearn")
    la = a.fit_predict(x)
    rows = np.sort(train_rows(5000, 2000, 0))
    b = KMeans(k=5, train_size=2000, backend="sklearn")
    b.fit(x[rows])
    b.start_assign()
    lb = np.concatenate([b.assign(x[s:s + 700]) for s in range(0, 5000, 700)])
    assert np.array_equal(la, lb) and a.inertia == pytest.approx(b.inertia)


def test_streamed_ids_digest_is_the_digest_of_the_written_ids(tmp_path):
    ids = [f"img_{i}" for i in range(70_000)] + ['a,b "quoted"', "ünï/çødé", "\udcff-surrogate", "last"]
    idx = store_embeddings.EmbeddingIndex(ids, [""] * len(ids))
    store_embeddings.write_embeddings(tmp_path / "e", np.zeros((len(ids), 2), np.float32), idx, features="backbone")
    assert store_embeddings.streamed_ids_digest(tmp_path / "e") == (len(ids), store_embeddings.ids_digest(ids))
    assert store_embeddings.streamed_ids_digest(tmp_path / "e")[1] != store_embeddings.ids_digest(ids[:-1] + ["lest"])


def test_umap_rows_are_assigned_from_the_coordinates_they_were_fitted_on(tmp_path, base, monkeypatch):
    """Streaming k-means after UMAP: the centroids are fitted on the sample's UMAP coordinates, and each sampled row
    is assigned from those very coordinates (umap-learn's transform of a fitted row is another point); the rows
    outside the sample are mapped into the same layout."""
    x, y = planted(400, 8, 4)
    make_run(tmp_path / "runs", x, y)
    fitted: list[np.ndarray] = []
    assigned: list[np.ndarray] = []
    real_fit, real_assign = KMeans.fit, KMeans.assign

    def fit(self, xs):
        fitted.append(np.array(xs))
        return real_fit(self, xs)

    def assign(self, block, checked=False):
        assigned.append(np.array(block))
        return real_assign(self, block, checked)

    monkeypatch.setattr(KMeans, "fit", fit)
    monkeypatch.setattr(KMeans, "assign", assign)
    monkeypatch.setattr(cluster_stage, "ASSIGN_BLOCK", 150, raising=False)
    stage_cluster(compose(base + ["clustering.algorithm.k=4", "clustering.algorithm.train_size=250",
                                  "clustering.preprocess.umap_dim=2", "evaluate.validation.fraction=0"]))
    rows = train_rows(400, 250, 0)  # the stage's seeded sample (seed 0), in the order it was fitted
    coords = np.concatenate(assigned)
    assert len(fitted) == 1 and coords.shape == (400, 2)
    np.testing.assert_array_equal(coords[rows], fitted[0])
    others = np.setdiff1d(np.arange(400), rows)
    assert np.isfinite(coords[others]).all()
