"""Every cluster metric against scikit-learn (or a reference written here) on randomised cases: clusters fewer
than, equal to and more than the classes, with and without noise (-1), unknown labels (-1)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation import metrics as metrics_module
from sslcluster.evaluation.metrics import cluster_metrics, cluster_to_class, hungarian_accuracy, purity, variances


def reference_hungarian(t: np.ndarray, p: np.ndarray) -> float:
    """One-to-one matching of non-noise clusters to classes, written from scratch: cost = -overlap."""
    clusters = sorted(set(p.tolist()) - {-1})
    classes = sorted(set(t.tolist()))
    overlap = np.array([[np.sum((p == c) & (t == k)) for k in classes] for c in clusters]).reshape(
        len(clusters), len(classes))
    r, c = linear_sum_assignment(-overlap)
    return overlap[r, c].sum() / len(t)


def reference_singletons(p: np.ndarray) -> np.ndarray:
    """Noise points as clusters of their own, written here: ids 1000 + position."""
    return np.where(p < 0, 1000 + np.arange(len(p)), p)


def reference_nmi_arithmetic(t: np.ndarray, p: np.ndarray) -> float:
    """I(T;P) / ((H(T) + H(P)) / 2), from the contingency table, written here."""
    n = len(t)
    joint = {}
    for a, b in zip(t.tolist(), p.tolist()):
        joint[(a, b)] = joint.get((a, b), 0) + 1
    pt = {a: np.mean(t == a) for a in set(t.tolist())}
    pp = {b: np.mean(p == b) for b in set(p.tolist())}
    mi = sum(c / n * np.log((c / n) / (pt[a] * pp[b])) for (a, b), c in joint.items())
    ht = -sum(v * np.log(v) for v in pt.values())
    hp = -sum(v * np.log(v) for v in pp.values())
    return mi / ((ht + hp) / 2)


def reference_majority(t: np.ndarray, p: np.ndarray) -> float:
    hits = 0
    for c in set(p.tolist()) - {-1}:
        hits += np.bincount(t[p == c]).max()
    return hits / len(t)


def random_case(rng: np.random.Generator, n_classes: int, n_clusters: int, noise: float, n: int = 300):
    t = rng.integers(0, n_classes, n)
    # labels correlated with the classes, plus shuffles, so matchings are non-trivial
    p = np.where(rng.random(n) < 0.6, t % n_clusters, rng.integers(0, n_clusters, n))
    p = rng.permutation(n_clusters)[p]
    p[rng.random(n) < noise] = -1
    x = rng.standard_normal((n, 5)) + p[:, None] * 0.7
    return x.astype(np.float32), t.astype(np.int64), p.astype(np.int64)


CASES = [(n_classes, n_clusters, noise, seed)
         for n_classes, n_clusters in ((5, 5), (5, 3), (4, 9), (10, 12))
         for noise in (0.0, 0.15)
         for seed in (0, 1)]


@pytest.mark.parametrize("n_classes,n_clusters,noise,seed", CASES)
def test_metrics_equal_references(n_classes, n_clusters, noise, seed):
    rng = np.random.default_rng(seed)
    x, t, p = random_case(rng, n_classes, n_clusters, noise)
    m = cluster_metrics(x, p, t)
    s = reference_singletons(p)  # the noise rule: never grouped with another point
    assert m["nmi"] == pytest.approx(reference_nmi_arithmetic(t, s), abs=1e-9)
    assert m["ami"] == pytest.approx(skm.adjusted_mutual_info_score(t, s), abs=1e-12)
    assert m["ari"] == pytest.approx(skm.adjusted_rand_score(t, s), abs=1e-12)
    assert m["purity"] == pytest.approx(reference_majority(t, p), abs=1e-12)
    n_pred = len(set(p.tolist()) - {-1})
    # acc is the one-to-one Hungarian accuracy for any number of clusters, never purity
    assert m["acc"] == pytest.approx(reference_hungarian(t, p), abs=1e-12)
    assert "acc_mapping" not in m
    assert hungarian_accuracy(t, p) == pytest.approx(reference_hungarian(t, p), abs=1e-12)
    if noise:
        c = p >= 0
        assert m["nmi_clustered"] == pytest.approx(reference_nmi_arithmetic(t[c], p[c]), abs=1e-9)
        assert m["ari_clustered"] == pytest.approx(skm.adjusted_rand_score(t[c], p[c]), abs=1e-12)
        assert m["acc_clustered"] == pytest.approx(reference_hungarian(t[c], p[c]), abs=1e-12)
    else:
        assert "nmi_clustered" not in m
    keep = p >= 0
    xs, ps = x[keep], p[keep]
    assert m["noise_fraction"] == pytest.approx(1 - keep.mean())
    assert m["n_clusters"] == n_pred
    assert m["silhouette"] == pytest.approx(skm.silhouette_score(xs, ps), rel=1e-5)
    assert m["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(xs, ps), rel=1e-5)
    assert m["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(xs, ps), rel=1e-5)
    # variances: intra = k-means inertia / n; intra + inter = total variance; CH = inter (n-k) / (intra (k-1))
    xd = xs.astype(np.float64)
    cents = {c: xd[ps == c].mean(axis=0) for c in np.unique(ps)}
    inertia = sum(((xd[ps == c] - mu) ** 2).sum() for c, mu in cents.items())
    assert m["intra_var"] == pytest.approx(inertia / len(ps), rel=1e-9)
    assert m["intra_var"] + m["inter_var"] == pytest.approx(xd.var(axis=0).sum(), rel=1e-9)
    k = len(cents)
    assert m["inter_var"] * (len(ps) - k) / (m["intra_var"] * (k - 1)) == pytest.approx(
        skm.calinski_harabasz_score(xs, ps), rel=1e-5)
    assert "var_ratio" not in m  # inter/intra grows with k; Calinski-Harabasz is its k-corrected form


def test_unknown_labels_are_left_out():
    rng = np.random.default_rng(3)
    x, t, p = random_case(rng, 4, 4, 0.1)
    t_unknown = t.copy()
    t_unknown[::7] = -1
    m = cluster_metrics(None, p, t_unknown)
    known = t_unknown >= 0
    assert m["n_labeled"] == known.sum()
    assert m["nmi"] == pytest.approx(reference_nmi_arithmetic(t[known], reference_singletons(p[known])), abs=1e-9)
    assert m["acc"] == pytest.approx(reference_hungarian(t[known], p[known]))


def test_noise_is_never_matched_to_a_class():
    # the noise "cluster" is the largest group of class 0; it must not earn accuracy
    t = np.array([0] * 6 + [1] * 4)
    p = np.array([-1] * 6 + [0] * 4)
    assert hungarian_accuracy(t, p) == pytest.approx(0.4)
    assert purity(t, p) == pytest.approx(0.4)
    assert -1 not in cluster_to_class(t, p)


def test_perfect_clustering_scores_one_under_any_relabelling():
    t = np.repeat(np.arange(4), 25)
    p = np.array([3, 0, 2, 1])[t]
    m = cluster_metrics(None, p, t)
    assert m["nmi"] == pytest.approx(1) and m["ari"] == pytest.approx(1)
    assert m["acc"] == pytest.approx(1) and m["purity"] == pytest.approx(1)
    assert cluster_to_class(t, p) == {3: 0, 0: 1, 2: 2, 1: 3}


def test_all_noise_and_single_cluster_internal_metrics_are_nan():
    x = np.random.default_rng(0).standard_normal((20, 3))
    m = cluster_metrics(x, np.full(20, -1), None)
    assert m["n_clusters"] == 0 and m["noise_fraction"] == 1.0 and np.isnan(m["silhouette"])
    assert np.isnan(variances(x, np.full(20, -1))[0])
    m1 = cluster_metrics(x, np.zeros(20, dtype=np.int64), None)
    assert np.isnan(m1["silhouette"]) and m1["inter_var"] == pytest.approx(0, abs=1e-12)


def test_wrong_lengths_are_refused():
    with pytest.raises(SSLClusterError, match="9 labels for 10"):
        cluster_metrics(None, np.zeros(10), np.zeros(9))
    with pytest.raises(SSLClusterError, match="8 points for 10"):
        cluster_metrics(np.zeros((8, 2)), np.zeros(10), None)
    with pytest.raises(SSLClusterError, match="no points"):
        cluster_metrics(None, np.zeros(0), None)


def test_acc_stays_one_to_one_with_more_clusters_than_classes():
    # 2 classes split into 4 pure clusters: purity is 1, the one-to-one accuracy only matches 2 of the 4 clusters
    t = np.repeat([0, 1], 20)
    p = np.repeat([0, 1, 2, 3], 10)
    m = cluster_metrics(None, p, t)
    assert m["purity"] == pytest.approx(1.0)
    assert m["acc"] == pytest.approx(0.5)


def test_noise_is_never_grouped_in_nmi_and_ari():
    # class 0 is all noise: under "noise is one more cluster" it would be a perfect cluster (NMI = ARI = 1)
    t = np.repeat([0, 1, 2], 10)
    p = np.concatenate([np.full(10, -1), np.full(10, 0), np.full(10, 1)])
    m = cluster_metrics(None, p, t)
    assert m["ari"] < 0.9 and m["nmi"] < 0.9
    assert m["ari"] == pytest.approx(skm.adjusted_rand_score(t, reference_singletons(p)))
    assert m["acc"] == pytest.approx(2 / 3) and m["purity"] == pytest.approx(2 / 3)
    # over the clustered points only, with the noise fraction beside: a perfect 2-cluster clustering
    assert m["nmi_clustered"] == pytest.approx(1.0) and m["acc_clustered"] == pytest.approx(1.0)
    assert m["noise_fraction"] == pytest.approx(1 / 3)


def test_nmi_normalisation_is_arithmetic_and_recorded():
    rng = np.random.default_rng(5)
    t, p = rng.integers(0, 3, 200), rng.integers(0, 7, 200)
    m = cluster_metrics(None, p, t)
    assert m["nmi_normalization"] == "arithmetic"
    assert m["nmi"] == pytest.approx(reference_nmi_arithmetic(t, p), abs=1e-9)
    # the geometric or max normalisation would differ here (H(P) is far from H(T))
    assert abs(m["nmi"] - skm.normalized_mutual_info_score(t, p, average_method="max")) > 1e-3


def test_internal_metrics_subsample_deterministically_above_the_stated_size():
    INTERNAL_SAMPLE, internal_metrics = metrics_module.INTERNAL_SAMPLE, metrics_module.internal_metrics
    rng = np.random.default_rng(0)
    n = INTERNAL_SAMPLE + 500
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    a, b = internal_metrics(x, y), internal_metrics(x, y)
    assert a["internal_n"] == INTERNAL_SAMPLE and a == b
    small = internal_metrics(x[:300], y[:300])
    assert small["internal_n"] == 300
    assert small["silhouette"] == pytest.approx(skm.silhouette_score(x[:300], y[:300]), rel=1e-5)
