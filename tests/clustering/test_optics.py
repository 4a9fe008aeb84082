"""OPTICS, added as one class and one config file: it finds planted clusters and refuses bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from sslcluster.clustering.density import OPTICS
from sslcluster.errors import SSLClusterError
from sslcluster.factory import build


def test_optics_from_its_config_finds_planted_clusters(compose):
    x, y = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    algo = build(compose(["clustering=optics"]).clustering.algorithm)
    assert isinstance(algo, OPTICS)
    labels = algo.fit_predict(x.astype(np.float32))
    assert labels.dtype == np.int64 and labels.shape == (300,)
    keep = labels >= 0
    assert keep.mean() > 0.9 and len(set(labels[keep].tolist())) == 3 and adjusted_rand_score(y[keep], labels[keep]) > 0.95


def test_optics_refuses_a_bad_xi_in_one_line():
    with pytest.raises(SSLClusterError, match=r"clustering.algorithm.xi=2"):
        OPTICS(xi=2).check()


def test_k_selection_is_refused_for_optics():
    assert OPTICS().choosable_k() is not None and OPTICS().requested_k() is None
