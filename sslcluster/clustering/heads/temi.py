"""TEMI's clustering heads on frozen embeddings (Adaloglou et al., "Exploring the Limits of Deep Image Clustering
using Pretrained Models", BMVC 2023; reference: HHU-MMBS/TEMI-official-BMVC2023, ``train_main.py`` with
``--precomputed``).

A student and its EMA teacher (``teacher_momentum``), each ``num_heads`` DINO-style MLP heads, see a point and one
of its mined neighbours; the loss is TEMI's weighted beta-PMI with a running estimate of each head's cluster
marginal (:func:`sslcluster.clustering.heads.losses.temi_loss`), averaged over the heads. AdamW with TEMI's
learning rate scaled by batch / 256, a linear warm-up, then a cosine schedule to ``min_lr``; the heads' output
layer stays fixed for the first ``freeze_last_layer`` epochs. The teacher's head with the lowest TEMI loss over the
neighbour graph labels the points.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sslcluster.clustering.checks import KEY, check_positive
from sslcluster.clustering.heads.common import LearnedHeads, MultiHead, pair_block
from sslcluster.clustering.heads.losses import temi_loss, temi_marginal_update
from sslcluster.errors import SSLClusterError


@dataclass
class TEMIHeads(LearnedHeads):
    """TEMI's heads on frozen embeddings; see the module docstring. Defaults: ``configs/clustering/temi.yaml``."""

    bottleneck_dim: int = 256
    beta: float = 0.6
    student_temperature: float = 0.1
    teacher_temperature: float = 0.1
    teacher_momentum: float = 0.996
    marginal_momentum: float = 0.9
    min_lr: float = 1e-4
    warmup_epochs: int = 20
    freeze_last_layer: int = 1
    head_kinds = ("dino", "mlp", "linear")

    def check(self) -> None:
        """One-line errors naming the first invalid setting."""
        super().check()
        check_positive(self.beta, "beta")
        check_positive(self.student_temperature, "student_temperature")
        check_positive(self.teacher_temperature, "teacher_temperature")
        check_positive(self.bottleneck_dim, "bottleneck_dim", integer=True)
        for name in ("teacher_momentum", "marginal_momentum"):
            if not 0 <= float(getattr(self, name)) < 1:
                raise SSLClusterError(f"{KEY}.{name}={getattr(self, name)!r} must be in [0, 1)")
        if float(self.min_lr) < 0:
            raise SSLClusterError(f"{KEY}.min_lr={self.min_lr!r} must be >= 0")
        for name in ("warmup_epochs", "freeze_last_layer"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SSLClusterError(f"{KEY}.{name}={v!r} must be a non-negative integer")

    def build(self, d_in: int) -> None:
        """Student heads, their EMA teacher (no gradients), the marginals (uniform) and AdamW (no weight decay
        on biases and the weight-norm gains, as TEMI's ``get_params_groups``)."""
        self.model = MultiHead(self.head, int(self.num_heads), d_in, int(self.k), hidden_dim=int(self.hidden_dim),
                               bottleneck_dim=int(self.bottleneck_dim))
        self.teacher = copy.deepcopy(self.model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        decay = [p for name, p in self.model.named_parameters() if not name.endswith(("bias", "last_g"))]
        rest = [p for name, p in self.model.named_parameters() if name.endswith(("bias", "last_g"))]
        self.opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                                     lr=float(self.lr), weight_decay=float(self.weight_decay))
        self.marginal = torch.full((int(self.num_heads), int(self.k)), 1.0 / int(self.k))
        self._batch: int | None = None

    def _lr(self, step: int, steps: int, batch: int) -> float:
        """TEMI's schedule: ``lr * batch / 256`` reached linearly over the warm-up epochs, then cosine to
        ``min_lr * batch / 256``."""
        base, final = float(self.lr) * batch / 256, float(self.min_lr) * batch / 256
        per_epoch = max(1, steps // max(1, int(self.epochs)))
        warm = int(self.warmup_epochs) * per_epoch
        if step < warm:
            return base * step / warm
        t = (step - warm) / max(1, steps - warm)
        return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))

    def train_step(self, anchors: Tensor, neighbors: Tensor, epoch: int, step: int, steps: int) -> dict[str, float]:
        """One step: the marginal updated with the teacher's predictions, the heads' mean TEMI loss minimised,
        the teacher moved towards the student."""
        if self.marginal.device != anchors.device:
            self.marginal = self.marginal.to(anchors.device)
        for group in self.opt.param_groups:
            group["lr"] = self._lr(step, steps, anchors.shape[0])
        with torch.no_grad():
            t_a, t_n = self.teacher(anchors), self.teacher(neighbors)
        self.marginal = temi_marginal_update(self.marginal, t_a, t_n, momentum=float(self.marginal_momentum),
                                             teacher_temperature=float(self.teacher_temperature))
        losses = temi_loss(self.model(anchors), self.model(neighbors), t_a, t_n, self.marginal,
                           beta=float(self.beta), student_temperature=float(self.student_temperature),
                           teacher_temperature=float(self.teacher_temperature))
        loss = losses.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if epoch < int(self.freeze_last_layer):
            for p in self.model.last_layer():
                p.grad = None
        self.opt.step()
        with torch.no_grad():
            m = float(self.teacher_momentum)
            for pt, ps in zip(self.teacher.parameters(), self.model.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
        return {"loss": float(loss.detach())}

    def predict_module(self) -> nn.Module:
        """The teacher labels the points (TEMI evaluates the teacher)."""
        return self.teacher

    def logits(self, module: nn.Module, x: Tensor) -> Tensor:
        """The teacher's logits at its temperature: its predictions are those the loss saw."""
        out: Tensor = module(x) / float(self.teacher_temperature)
        return out

    @torch.no_grad()
    def head_losses(self, probs: Tensor, neighbours: np.ndarray) -> Tensor:
        """Per head, TEMI's loss over every (point, neighbour) pair of the graph with the teacher's predictions on
        both sides and the running marginal: ``mean -w log sum_k (p_i p_j)^beta / q~_k``, ``w`` the pair's
        agreement averaged over the heads."""
        h, n, _ = probs.shape
        nb = torch.from_numpy(neighbours)
        log_m = self.marginal.detach().double().cpu().log()[:, None, None, :]  # (H, 1, 1, K)
        total = torch.zeros(h, dtype=torch.float64)
        block = pair_block(h, nb.shape[1], probs.shape[2])
        for s in range(0, n, block):
            p_i = probs[:, s:s + block, None, :].double()
            p_j = probs[:, nb[s:s + block]].double()  # (H, B, k+1, K)
            w = (p_i * p_j).sum(-1).mean(0)  # (B, k+1)
            pmi = torch.logsumexp(float(self.beta) * (p_i.clamp_min(1e-30).log() + p_j.clamp_min(1e-30).log())
                                  - log_m, dim=-1)  # (H, B, k+1)
            total += -(w * pmi).sum(dim=(1, 2))
        return total / (n * nb.shape[1])
