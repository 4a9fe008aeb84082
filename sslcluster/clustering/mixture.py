"""Model-based clustering: a Gaussian mixture fitted by EM (:class:`GaussianMixture`, scikit-learn), which also
assigns points it was not fitted on and gives the BIC k selection can use. Config: ``configs/clustering/gmm.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.clustering.checks import check_choice, check_k, check_points, check_positive


@dataclass
class GaussianMixture(ClusteringAlgorithm):
    """Gaussian mixture by EM (Dempster et al. 1977), scikit-learn; hard labels = most probable component.
    ``bic`` (Schwarz 1978) is kept for k selection."""

    k: int = 10
    covariance_type: str = "full"
    n_init: int = 1
    max_iter: int = 200
    reg_covar: float = 1e-6
    init_params: str = "kmeans"
    seed: int = 0
    bic: float | None = field(default=None, init=False)
    model: Any = field(default=None, init=False, repr=False)
    fit_fields = ("bic",)
    provides_bic = True
    assigns_new_points = True

    def check(self) -> None:
        """Raise a one-line error naming the first invalid setting."""
        check_choice(self.covariance_type, "covariance_type", ("full", "tied", "diag", "spherical"))
        check_choice(self.init_params, "init_params", ("kmeans", "k-means++", "random", "random_from_data"))
        check_positive(self.n_init, "n_init", integer=True)
        check_positive(self.max_iter, "max_iter", integer=True)
        check_positive(self.reg_covar, "reg_covar")

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Fit a Gaussian mixture to points (N, D) -> most likely component per point (N,) int64."""
        self.check()
        x = check_points(x)
        k = check_k(self.k, x.shape[0])
        from sklearn.mixture import GaussianMixture as SKGMM

        gmm = SKGMM(n_components=k, covariance_type=self.covariance_type, n_init=int(self.n_init),
                    max_iter=int(self.max_iter), reg_covar=float(self.reg_covar), init_params=self.init_params,
                    random_state=self.seed)
        labels = gmm.fit_predict(x.astype(np.float64)).astype(np.int64)
        self.bic = float(gmm.bic(x.astype(np.float64)))
        self.model = gmm
        return labels

    def fit(self, x: np.ndarray) -> None:
        """Fit the mixture on ``x`` (T, D) float32 (``clustering.fit_split``); :meth:`assign` labels other points."""
        self.fit_predict(x)

    def start_assign(self) -> None:
        """Nothing to reset: the mixture's assignment keeps no running figure."""

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """The most likely component (B,) int64 of each point of ``block`` (B, D) under the fitted mixture."""
        if self.model is None:
            raise RuntimeError("GaussianMixture.assign before fit")
        block = np.asarray(block, dtype=np.float32) if checked else check_points(block)
        return self.model.predict(block.astype(np.float64)).astype(np.int64)
