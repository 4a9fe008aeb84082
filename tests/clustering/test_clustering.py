"""Every algorithm on exported digits embeddings (through the cluster and evaluate stages), and planted Gaussian
blobs recovered by k-means, GMM, agglomerative, HDBSCAN and SOM + k-means."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.checks import wcss
from sslcluster.clustering.density import DBSCAN, HDBSCAN
from sslcluster.clustering.hierarchical import Agglomerative, Birch
from sslcluster.clustering.kmeans import KMeans, MiniBatchKMeans
from sslcluster.clustering.mixture import GaussianMixture
from sslcluster.clustering.spectral import Spectral
from sslcluster.clustering.som import SOM
from sslcluster.config import compose
from sslcluster.pipeline import run_pipeline, stage_cluster
from sslcluster.stages.evaluate import evaluate_clustering

ALL_METRICS = ("nmi", "ami", "ari", "acc", "purity", "intra_var", "inter_var",
               "silhouette", "davies_bouldin", "calinski_harabasz", "noise_fraction", "n_clusters")


def tiny_overrides(root) -> list[str]:
    """The ``tiny`` fixture's overrides without the k-means-only ones (module scope cannot use ``tiny``)."""
    return [f"run.root={root}", "trainer.max_epochs=1", "data.batch_size=64", "backbone.module.width=8",
            "backbone.module.depth=2", "logger=none", "evaluate.linear_probe=false", "export.batch_size=256",
            "evaluate.plots.enabled=false", "clustering.features=backbone"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One run with exported digits embeddings (train and test), shared by this module's tests."""
    root = tmp_path_factory.mktemp("runs")
    base = tiny_overrides(root)
    run_pipeline(compose(base + ["run.key=digits", "stages.baseline=false", "stages.cluster=false",
                                 "stages.evaluate=false"]))
    return root, base


# clustering=<name> and the overrides that keep it fast (and meaningful) on 360 16-dimensional points
DIGITS_CASES = {
    "kmeans": ["clustering.algorithm.n_init=2"],
    "kmeans-faiss": ["clustering=kmeans", "clustering.algorithm.backend=faiss", "clustering.algorithm.n_init=2"],
    "minibatch_kmeans": ["clustering.algorithm.batch_size=128"],
    "hdbscan": ["clustering.preprocess.umap_dim=null", "clustering.algorithm.min_cluster_size=5",
                "clustering.algorithm.min_samples=3"],
    "dbscan": [],  # eps from the data: see dbscan_eps
    "gmm": ["clustering.preprocess.pca_dim=8"],
    "agglomerative": [],
    "agglomerative-average": ["clustering=agglomerative", "clustering.algorithm.linkage=average"],
    "agglomerative-complete": ["clustering=agglomerative", "clustering.algorithm.linkage=complete"],
    "agglomerative-single": ["clustering=agglomerative", "clustering.algorithm.linkage=single"],
    "birch": [],
    "spectral": [],
    "som": ["clustering.algorithm.iterations=2000", "clustering.algorithm.grid=[6,6]"],
    "som-node": ["clustering=som", "clustering.algorithm.mode=node", "clustering.algorithm.grid=[3,4]",
                 "clustering.algorithm.iterations=2000"],
}


def dbscan_eps(folder, min_samples: int = 5) -> float:
    """The k-distance heuristic (after Ester et al. 1996): a low quantile (10 %) of the distances of the points to their
    ``min_samples``-th neighbours, on the L2-normalised rows DBSCAN sees (dense cores, several clusters)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.load(folder / "embeddings.npy")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist, _ = NearestNeighbors(n_neighbors=min_samples + 1).fit(x).kneighbors(x)
    return float(np.quantile(dist[:, -1], 0.1))


@pytest.mark.parametrize("case", sorted(DIGITS_CASES))
def test_every_algorithm_on_exported_digits(digits_run, case):
    root, base = digits_run
    name = case.split("-")[0]
    overrides = DIGITS_CASES[case]
    if not any(o.startswith("clustering=") for o in overrides):
        overrides = [f"clustering={name}", *overrides]
    if name == "dbscan":
        overrides = [*overrides, f"clustering.algorithm.eps={dbscan_eps(root / 'digits' / 'embeddings' / 'test')}"]
    cfg = compose(base + ["run.key=digits", f"clustering.key={case}", *overrides])
    stage_cluster(cfg)
    cdir = root / "digits" / "clusters" / case
    record = json.loads((cdir / "record.json").read_text())
    assert record["status"] == "complete" and record["algorithm"] == name
    labels = np.load(cdir / "labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (360,)
    m = evaluate_clustering(cfg, cdir)
    for key in ALL_METRICS:
        assert key in m, key
    assert m["n_clusters"] == len(np.unique(labels[labels >= 0])) >= 2
    # the figures are those of labels.npy against index.csv's labels, row by row (the noise rule: singletons)
    from tests.evaluation.test_metrics import reference_hungarian, reference_nmi_arithmetic, reference_singletons
    from sslcluster.store.clusters import Clustering

    truth = Clustering(cdir).index(with_labels=True).labels
    assert m["nmi"] == pytest.approx(reference_nmi_arithmetic(truth, reference_singletons(labels)), abs=1e-9)
    assert m["acc"] == pytest.approx(reference_hungarian(truth, labels), abs=1e-12)
    assert m["noise_fraction"] == pytest.approx(float((labels < 0).mean()))
    # average and single linkage chain into one giant cluster; complete linkage on this 1-epoch run scores 0.14
    if case not in ("agglomerative-average", "agglomerative-single", "agglomerative-complete"):
        # 10 digit classes: random 10-way labels score ~0.05 here (BIRCH scores 0.147 since SimCLR's hidden layer
        # follows the backbone's 16 features, issue 32)
        assert m["nmi"] > 0.12, m["nmi"]
    assert json.loads((cdir / "metrics.json").read_text())["nmi"] == pytest.approx(m["nmi"])
    if case == "som-node":
        assert labels.max() < 12
    if name == "som":
        assert np.load(cdir / "som_weights.npy").shape[:2] == tuple(record["params"]["grid"])
        assert (np.load(cdir / "som_bmu.npy") >= 0).all()
    if name in ("kmeans", "gmm", "agglomerative", "birch", "spectral", "minibatch_kmeans"):
        assert m["n_clusters"] == 10 and m["noise_fraction"] == 0


def planted_blobs(n_per: int = 150, k: int = 6, dim: int = 16, seed: int = 0):
    """Well-separated Gaussian blobs: centres 12 standard deviations apart on average."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 3.0
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.standard_normal((len(y), dim)) * 0.5
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


@pytest.mark.parametrize("algo,threshold", [
    (KMeans(k=6, backend="sklearn", n_init=4), 0.95),
    (KMeans(k=6, backend="faiss", n_init=4), 0.95),
    (GaussianMixture(k=6, n_init=2), 0.95),
    (Agglomerative(k=6, linkage="ward"), 0.95),
    (Agglomerative(k=6, linkage="average"), 0.95),
    (HDBSCAN(min_cluster_size=20), 0.95),
    (SOM(grid=[6, 6], sigma=1.5, iterations=3000, mode="kmeans", k=6), 0.9),
    (SOM(grid=[6, 6], sigma=1.5, iterations=3000, mode="agglomerative", k=6, init="random"), 0.9),
], ids=lambda v: type(v).__name__ + (f"-{getattr(v, 'backend', '')}{getattr(v, 'linkage', '')}"
                                     f"{getattr(v, 'mode', '')}" if not isinstance(v, float) else ""))
def test_planted_blobs_are_recovered(algo, threshold):
    x, y = planted_blobs()
    labels = algo.fit_predict(x)
    assert labels.shape == y.shape and labels.dtype == np.int64
    assert normalized_mutual_info_score(y, labels) > threshold


@pytest.mark.parametrize("algo", [MiniBatchKMeans(k=6), Birch(k=6, threshold=0.5), Spectral(k=6),
                                  DBSCAN(eps=3.0, min_samples=5)], ids=lambda a: type(a).__name__)
def test_other_algorithms_find_planted_blobs(algo):
    x, y = planted_blobs()
    assert normalized_mutual_info_score(y, algo.fit_predict(x)) > 0.9


def test_hdbscan_keeps_noise_distinct():
    x, y = planted_blobs(k=3)
    far = np.random.default_rng(1).uniform(-60, 60, (30, x.shape[1])).astype(np.float32)
    labels = HDBSCAN(min_cluster_size=20).fit_predict(np.concatenate([x, far]))
    assert (labels[len(x):] == -1).mean() > 0.8       # scattered outliers are noise
    assert (labels[:len(x)] >= 0).mean() > 0.95


def test_kmeans_inertia_and_wcss_agree_and_backends_match():
    x, _ = planted_blobs(k=4)
    a, b = KMeans(k=4, backend="sklearn", n_init=3), KMeans(k=4, backend="faiss", n_init=3)
    la, lb = a.fit_predict(x), b.fit_predict(x)
    assert a.inertia == pytest.approx(wcss(x, la), rel=1e-3)
    assert b.inertia == pytest.approx(wcss(x, lb), rel=1e-3)
    assert normalized_mutual_info_score(la, lb) == pytest.approx(1.0)
    assert KMeans(k=4).resolved_backend(100) == "sklearn" and KMeans(k=4).resolved_backend(10**6) == "faiss"


@pytest.mark.slow
def test_hdbscan_default_chain_with_umap_on_digits(digits_run):
    """The shipped hdbscan config (L2 -> UMAP 10-d -> HDBSCAN) on exported digits; slow: UMAP compiles."""
    root, base = digits_run
    cfg = compose(base + ["run.key=digits", "clustering.key=hdbscan-umap", "clustering=hdbscan"])
    stage_cluster(cfg)
    cdir = root / "digits" / "clusters" / "hdbscan-umap"
    record = json.loads((cdir / "record.json").read_text())
    assert record["preprocess"] == ["l2", "umap10"] and record["clustered_dim"] == 10
    m = evaluate_clustering(cfg, cdir)
    assert m["n_clusters"] >= 2 and 0 <= m["noise_fraction"] < 1
