"""Representation quality: weighted kNN (k=200, T=0.1 on L2-normalised features, as in lightly's benchmarks,
after Wu et al. 2018) and a linear probe (multinomial logistic regression, scikit-learn)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from lightly.utils.benchmarking import knn_predict

from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress

log = logging.getLogger(__name__)


def _labeled(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    keep = y >= 0
    if not keep.any():
        raise SSLClusterError(f"the {what} split has no held-out labels; kNN / linear probe need them")
    return np.asarray(x[keep], dtype=np.float32), y[keep]


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 200, t: float = 0.1, batch_size: int = 1024) -> float:
    """Top-1 accuracy of lightly's weighted kNN with the train split as bank. Features (N, D) are L2-normalised
    here; k is capped at the bank size."""
    train_x, train_y = _labeled(train_x, train_y, "train")
    test_x, test_y = _labeled(test_x, test_y, "test")
    bank = torch.nn.functional.normalize(torch.from_numpy(train_x), dim=1).t().contiguous()  # (D, N)
    bank_labels = torch.from_numpy(train_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    with progress(len(test_x), "kNN probe", unit="img") as bar:
        for s in range(0, len(test_x), batch_size):
            q = torch.nn.functional.normalize(torch.from_numpy(test_x[s:s + batch_size]), dim=1)
            pred = knn_predict(q, bank, bank_labels, num_classes, knn_k=min(k, bank.shape[1]), knn_t=t)
            correct += int((pred[:, 0].numpy() == test_y[s:s + batch_size]).sum())
            bar.update(len(q))
    return correct / len(test_x)


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          max_iter: int = 1000, seed: int = 0) -> float:
    """Top-1 accuracy of a logistic-regression probe on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y = _labeled(train_x, train_y, "train")
    test_x, test_y = _labeled(test_x, test_y, "test")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    # scikit-learn's lbfgs fit reports no progress: one line before and one after, with its time
    log.info("linear probe: fitting on %d x %d features (at most %d lbfgs iterations)", *train_x.shape, max_iter)
    start = time.monotonic()
    clf.fit(train_x, train_y)
    log.info("linear probe: fitted in %.1f s (%d iterations)", time.monotonic() - start,
             int(clf[-1].n_iter_.max()))
    return float((clf.predict(test_x) == test_y).mean())
