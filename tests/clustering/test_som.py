"""Self-organising map: node-as-cluster and node weights clustered into k, determinism, best-matching units,
the fitted arrays kept for the pictures, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from sslcluster.clustering.som import SOM, best_matching_units
from sslcluster.errors import SSLClusterError


def blobs(k: int = 4, n_per: int = 80, dim: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4.0
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.standard_normal((len(y), dim)) * 0.5).astype(np.float32), y


def assert_nearest(x: np.ndarray, nodes: np.ndarray, units: np.ndarray) -> None:
    """Each row's unit is a nearest node of ``nodes`` (M, D) to ``x`` (N, D), up to float32 rounding: the expanded
    distance the SOM computes and the direct one here may order two nearly equidistant nodes either way."""
    d = ((x[:, None, :].astype(np.float64) - nodes[None].astype(np.float64)) ** 2).sum(-1)
    best = d.min(axis=1)
    assert units.min() >= 0 and units.max() < len(nodes)
    assert (d[np.arange(len(x)), units] <= best + 1e-5 * (1 + best)).all()


def test_node_mode_labels_are_winning_nodes():
    x, _ = blobs()
    som = SOM(grid=[4, 5], mode="node", k=None, iterations=1500)
    labels = som.fit_predict(x)
    assert som.weights.shape == (4, 5, 10)
    flat = som.weights.reshape(20, 10)
    assert_nearest(x, flat, labels)
    assert np.array_equal(som.bmu, labels)
    assert labels.min() >= 0 and labels.max() < 20
    assert som.quantization_error == pytest.approx(np.linalg.norm(x - flat[labels], axis=1).mean(), rel=1e-5)


@pytest.mark.parametrize("mode,init", [("kmeans", "pca"), ("kmeans", "random"), ("agglomerative", "pca")])
def test_node_weights_clustered_into_k(mode, init):
    x, y = blobs()
    som = SOM(grid=[6, 6], sigma=1.5, iterations=2000, mode=mode, k=4, init=init, seed=1)
    labels = som.fit_predict(x)
    assert len(np.unique(labels)) == 4
    assert np.array_equal(labels, som.node_labels[som.bmu])
    assert normalized_mutual_info_score(y, labels) > 0.9
    arts = som.artifacts()
    assert set(arts) == {"som_weights", "som_bmu", "som_node_labels"} and arts["som_bmu"].shape == (len(x),)



def test_winning_nodes_follow_the_original_rows_after_a_shuffled_fit():
    # the cluster stage fits on rows in a seeded random order; som_bmu.npy must still line up with labels.npy
    x, _ = blobs()
    som = SOM(grid=[4, 4], mode="node", k=None, iterations=800)
    labels = som.fit_predict_shuffled(x, seed=5)
    assert np.array_equal(som.bmu, labels)
    assert_nearest(x, som.weights.reshape(16, -1), som.bmu)

def test_same_seed_same_map_other_seed_differs():
    x, _ = blobs()
    a = SOM(grid=[5, 5], init="random", iterations=800, seed=3, k=4)
    b = SOM(grid=[5, 5], init="random", iterations=800, seed=3, k=4)
    c = SOM(grid=[5, 5], init="random", iterations=800, seed=4, k=4)
    a.fit_predict(x), b.fit_predict(x), c.fit_predict(x)
    assert np.array_equal(a.weights, b.weights)
    assert not np.allclose(a.weights, c.weights)


def test_best_matching_units_in_chunks():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1000, 6)).astype(np.float32), rng.standard_normal((13, 6)).astype(np.float32)
    assert_nearest(x, w, best_matching_units(x, w, chunk=37))


@pytest.mark.parametrize("kwargs,message", [
    ({"grid": [2, 3], "k": 7}, r"grid=\[2, 3\] has 6 nodes, fewer than clustering.algorithm.k=7"),
    ({"sigma": 0}, r"sigma=0 must be positive"),
    ({"sigma": -1.0}, r"sigma=-1.0 must be positive"),
    ({"learning_rate": 0}, r"learning_rate=0 must be positive"),
    ({"learning_rate": -0.5}, r"learning_rate=-0.5 must be positive"),
    ({"iterations": 0}, r"iterations=0 must be a positive integer"),
    ({"grid": [10]}, r"grid=\[10\] must be two positive integers"),
    ({"mode": "kmeans", "k": None}, r"k=None: mode 'kmeans' needs k"),
])
def test_bad_parameters_are_refused(kwargs, message):
    x, _ = blobs()
    with pytest.raises(SSLClusterError, match=message):
        SOM(**kwargs).fit_predict(x)


def test_k_larger_than_samples_and_nan_rows_refused():
    x, _ = blobs(n_per=2)
    with pytest.raises(SSLClusterError, match=r"k=9 is larger than the number of samples \(8\)"):
        SOM(grid=[3, 3], k=9).fit_predict(x)
    x[1, 0] = np.nan
    with pytest.raises(SSLClusterError, match="NaN or inf"):
        SOM(grid=[3, 3], k=2).fit_predict(x)
