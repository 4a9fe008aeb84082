"""SCAN's clustering step on frozen embeddings (Van Gansbeke et al., ECCV 2020), with its optional self-labelling.

The heads (``num_heads``, linear as SCAN's ``ClusteringModel``; ``head: mlp`` for an MLP) are trained on
(anchor, neighbour) pairs with the SCAN loss (:func:`sslcluster.clustering.heads.losses.scan_loss`), the head
with the lowest SCAN loss over the neighbour graph is kept (SCAN's ``scan_evaluate``), and, with
``self_label_epochs`` above 0, that head is then trained on its own confident predictions (SCAN's
``ConfidenceBasedCE``: points predicted above ``confidence_threshold`` are targets, class-balanced
cross-entropy). On frozen embeddings there are no image views: the prediction of a point's embedding is the target
of the same embedding, so self-labelling here sharpens the confident points' clusters and moves the boundary
between clusters towards them; SCAN's strong-augmentation step needs the backbone (the SCAN stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sslcluster.clustering.checks import KEY, check_choice, check_positive
from sslcluster.clustering.heads.common import LearnedHeads, MultiHead, pair_block
from sslcluster.clustering.heads.losses import SCAN_ENTROPY_EPS, scan_loss
from sslcluster.errors import SSLClusterError


@dataclass
class SCANHeads(LearnedHeads):
    """SCAN's heads on frozen embeddings; see the module docstring. Defaults: ``configs/clustering/scan.yaml``."""

    entropy_weight: float = 5.0
    optimizer: str = "sgd"          # sgd | adam
    momentum: float = 0.9
    self_label_epochs: int = 0
    confidence_threshold: float = 0.99
    self_label_lr: float = 1e-4
    self_label_weight_decay: float = 1e-4
    self_label_batch_size: int = 1000
    class_balancing: bool = True

    def check(self) -> None:
        """One-line errors naming the first invalid setting."""
        super().check()
        if (isinstance(self.entropy_weight, bool) or not isinstance(self.entropy_weight, (int, float))
                or self.entropy_weight < 0):
            raise SSLClusterError(f"{KEY}.entropy_weight={self.entropy_weight!r} must be >= 0")
        check_choice(self.optimizer, "optimizer", ("sgd", "adam"))
        if not 0 < float(self.confidence_threshold) < 1:
            raise SSLClusterError(f"{KEY}.confidence_threshold={self.confidence_threshold!r} must be in (0, 1)")
        if self.self_label_epochs:
            for name in ("self_label_epochs", "self_label_batch_size"):
                check_positive(getattr(self, name), name, integer=True)
            check_positive(self.self_label_lr, "self_label_lr")

    def build(self, d_in: int) -> None:
        """The heads and SCAN's optimiser for them."""
        self.model = MultiHead(self.head, int(self.num_heads), d_in, int(self.k), hidden_dim=int(self.hidden_dim))
        params = self.model.parameters()
        if self.optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=float(self.lr), momentum=float(self.momentum),
                                                              weight_decay=float(self.weight_decay))
        else:
            self.opt = torch.optim.Adam(params, lr=float(self.lr), weight_decay=float(self.weight_decay))

    def train_step(self, anchors: Tensor, neighbors: Tensor, epoch: int, step: int, steps: int) -> dict[str, float]:
        """One step of the SCAN loss summed over the heads (as SCAN's ``scan_train`` does)."""
        total, consistency, entropy = scan_loss(self.model(anchors), self.model(neighbors),
                                                entropy_weight=float(self.entropy_weight))
        self.opt.zero_grad(set_to_none=True)
        total.sum().backward()
        self.opt.step()
        return {"loss": float(total.detach().mean()), "consistency": float(consistency.detach().mean()),
                "entropy": float(entropy.detach().mean())}

    @torch.no_grad()
    def head_losses(self, probs: Tensor, neighbours: np.ndarray) -> Tensor:
        """SCAN's ``scan_evaluate``: per head, ``consistency - entropy`` over every (point, neighbour) pair of the
        graph (self included), with the consistency as a binary cross-entropy of the pair's agreement against 1
        (its log floored at -100, as torch's BCE does) and the entropy of the mean prediction."""
        h, n, _ = probs.shape
        nb = torch.from_numpy(neighbours)
        cons = torch.zeros(h, dtype=torch.float64)
        block = pair_block(h, nb.shape[1], probs.shape[2])
        for s in range(0, n, block):
            sim = (probs[:, s:s + block, None, :] * probs[:, nb[s:s + block]]).sum(-1)  # (H, B, k+1)
            cons += -sim.clamp_min(0).log().clamp_min(-100).double().sum(dim=(1, 2))
        cons /= n * nb.shape[1]
        mean = probs.double().mean(dim=1).clamp_min(SCAN_ENTROPY_EPS)
        entropy = -(mean * mean.log()).sum(-1)
        return cons - entropy

    def fit_rows(self, rows, transform=None, mine=None) -> None:  # type: ignore[no-untyped-def]
        """SCAN's step, then (``self_label_epochs``) self-labelling of the selected head."""
        super().fit_rows(rows, transform, mine)
        if self.self_label_epochs:
            self._self_label(rows, transform or (lambda b: np.asarray(b, dtype=np.float32)))

    def _self_label(self, rows, transform) -> None:  # type: ignore[no-untyped-def]
        """SCAN's self-labelling of the selected head on its confident predictions (ConfidenceBasedCE)."""
        assert self.best_head is not None
        device = next(self.model.parameters()).device
        opt = torch.optim.Adam(self.model.parameters(), lr=float(self.self_label_lr),
                               weight_decay=float(self.self_label_weight_decay))
        gen = torch.Generator().manual_seed(int(self.seed) + 1)
        n = int(rows.shape[0])
        batch = min(int(self.self_label_batch_size), n)
        steps = n // batch
        k, hd = int(self.k), int(self.best_head)
        for _ in range(int(self.self_label_epochs)):
            self.model.train()
            order = torch.randperm(n, generator=gen).numpy()
            ce_sum, confident = 0.0, 0
            for s in range(steps):
                x = torch.from_numpy(transform(rows[order[s * batch:(s + 1) * batch]])).to(device)
                logits = self.model(x)[hd]
                with torch.no_grad():
                    conf, target = torch.softmax(logits, dim=-1).max(dim=-1)
                    mask = conf > float(self.confidence_threshold)
                if not mask.any():
                    continue  # SCAN refuses a batch without a confident point; here it is skipped
                weight = None
                if self.class_balancing:
                    idx, counts = torch.unique(target[mask], return_counts=True)
                    weight = torch.ones(k, device=device)
                    weight[idx] = 1.0 / (counts.float() / mask.sum())
                loss = F.cross_entropy(logits[mask], target[mask], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ce_sum += float(loss.detach())
                confident += int(mask.sum())
            self.curve.append({"epoch": len(self.curve) + 1, "self_label_ce": ce_sum / max(1, steps),
                               "confident_fraction": confident / max(1, steps * batch)})
