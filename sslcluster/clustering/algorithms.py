"""Old import paths, kept for old configs: the configs and stored run configs (``config.yaml``,
``stage_configs/``) of runs made before the algorithms moved to one module per family name
``sslcluster.clustering.algorithms.KMeans`` (and ``.HDBSCAN``, ``.GaussianMixture``, ...) as ``_target_``, and code
written from the old docs imports the checks from here. Nothing is defined here: each name is re-exported from its
module, so the old path builds the same class. New code imports from the modules themselves:
:mod:`~sslcluster.clustering.kmeans`, :mod:`~sslcluster.clustering.density`, :mod:`~sslcluster.clustering.mixture`,
:mod:`~sslcluster.clustering.hierarchical`, :mod:`~sslcluster.clustering.spectral`,
:mod:`~sslcluster.clustering.checks` and :mod:`~sslcluster.clustering.base` (``tests/clustering/test_layout.py``
checks that this module stays a re-export and that the package itself never imports it).
"""

from __future__ import annotations

from sslcluster.clustering.base import ASSIGN_BLOCK, ClusteringAlgorithm, row_permutation, train_rows
from sslcluster.clustering.checks import KEY, LINKAGES, check_points, precheck, wcss
from sslcluster.clustering.checks import check_choice as _check_choice
from sslcluster.clustering.checks import check_k as _check_k
from sslcluster.clustering.checks import check_positive as _check_positive
from sslcluster.clustering.density import DBSCAN, HDBSCAN
from sslcluster.clustering.hierarchical import Agglomerative, Birch
from sslcluster.clustering.kmeans import AUTO_TRAIN_SIZE, FAISS_AUTO_MIN_POINTS, KMeans, MiniBatchKMeans, faiss_gpus
from sslcluster.clustering.mixture import GaussianMixture
from sslcluster.clustering.spectral import Spectral

#: the old function ``fit_predict_shuffled(algo, x, seed)``: now the method of the base class, called the same way.
fit_predict_shuffled = ClusteringAlgorithm.fit_predict_shuffled

__all__ = ["ASSIGN_BLOCK", "AUTO_TRAIN_SIZE", "DBSCAN", "FAISS_AUTO_MIN_POINTS", "HDBSCAN", "KEY", "LINKAGES",
           "Agglomerative", "Birch", "GaussianMixture", "KMeans", "MiniBatchKMeans", "Spectral", "_check_choice",
           "_check_k", "_check_positive", "check_points", "faiss_gpus", "fit_predict_shuffled", "precheck",
           "row_permutation", "train_rows", "wcss"]
