"""A weighted kNN reference written here (lightly's vote: the k nearest by cosine, each weighted exp(cos / T)) that
also counts the queries whose prediction a different summation order may flip.

Another implementation (faiss in blocks, lightly's ``knn_predict``, another CPU or thread count) rounds the
similarities differently in the last float32 bits. Where two classes' votes are within a hair of each other, or the
k-th and (k+1)-th neighbours are equally similar (the neighbour set itself is then a tie) and swapping them could
change the vote, either outcome is right.
Tests assert agreement up to those queries, never which way they go.
"""

from __future__ import annotations

import numpy as np
import torch

#: two class votes within this relative distance are a tie (float32's rounding of exp(cos / 0.1) is ~1e-6 relative)
VOTE_RTOL = 1e-3
#: two similarities within this are a tie at the k-th neighbour (cosines rounded in float32: ~1e-7)
SIM_ATOL = 1e-5


def weighted_knn(train: np.ndarray | torch.Tensor, train_y: np.ndarray | torch.Tensor,
                 test: np.ndarray | torch.Tensor, test_y: np.ndarray | torch.Tensor, k: int = 200,
                 t: float = 0.1) -> tuple[float, int]:
    """Top-1 accuracy of the weighted kNN vote of ``test`` (M, D) against the bank ``train`` (N, D) with labels
    ``train_y`` (N,), scored on ``test_y`` (M,); and the number of queries that are ties (see the module doc)."""
    bank, q = (torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float32), dim=1) for a in (train, test))
    ytr, yte = torch.as_tensor(np.asarray(train_y), dtype=torch.int64), torch.as_tensor(np.asarray(test_y),
                                                                                        dtype=torch.int64)
    k = min(k, len(bank))
    sim, idx = (q @ bank.t()).topk(min(k + 1, len(bank)), dim=1)  # (M, k + 1): one past the k-th, for its ties
    weights = (sim[:, :k].double() / t).exp()
    num_classes = int(max(ytr.max(), yte.max())) + 1
    votes = torch.zeros(len(q), num_classes, dtype=torch.float64).scatter_add_(1, ytr[idx[:, :k]], weights)
    top2 = votes.topk(min(2, num_classes), dim=1).values
    margin = top2[:, 0] - top2[:, -1]
    tied = margin <= VOTE_RTOL * top2[:, 0] if num_classes > 1 else torch.zeros(len(q), dtype=torch.bool)
    if sim.shape[1] > k:  # the k-th neighbour has a twin just outside: swapping them moves at most 2 w_k of votes
        tied |= (sim[:, k - 1] - sim[:, k] <= SIM_ATOL) & (margin <= 2 * weights[:, -1] * (1 + VOTE_RTOL))
    return float((votes.argmax(dim=1) == yte).double().mean()), int(tied.sum())
