"""The losses of learned clustering heads: SCAN's and TEMI's.

Neither lightly nor another maintained library ships them, so they are written here from the papers' formulas:

- SCAN (Van Gansbeke et al., "SCAN: Learning to Classify Images without Labels", ECCV 2020; the reference is
  ``losses/losses.py`` of wvangansbeke/Unsupervised-Classification): a point and one of its mined neighbours
  should get the same cluster, ``consistency = -mean_b log <p(anchor_b), p(neighbour_b)>``, while the mean
  prediction over the batch stays spread, ``entropy = H(mean_b p(anchor_b))``;
  ``total = consistency - entropy_weight * entropy``.
- TEMI (Adaloglou et al., "Exploring the Limits of Deep Image Clustering using Pretrained Models", BMVC 2023; the
  reference is ``losses/multihead_losses.py`` of HHU-MMBS/TEMI-official-BMVC2023): a student head and its EMA
  teacher see a point and a neighbour; the loss is the negative beta-pointwise mutual information between the
  student's prediction of one view and the teacher's of the other,
  ``-log sum_k (q_s(k|x) q_t(k|x'))^beta / q~(k)``, with ``q~`` a running (EMA) estimate of the teacher's
  cluster marginal, weighted per pair by how much the teacher agrees with itself across the pair,
  ``w = sum_k q_t(k|x) q_t(k|x')`` (no gradient), and symmetrised over which view the teacher sees.

Both work in log space (``logsumexp``), which equals the formulas wherever those are finite and stays finite
where a product of probabilities underflows. They never move tensors between devices: they run where the
logits are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslcluster.errors import SSLClusterError

#: the floor under the mean prediction's probabilities in SCAN's entropy (``EPS`` of SCAN's ``losses.py``).
SCAN_ENTROPY_EPS = 1e-8


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape or a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 1:
        raise SSLClusterError(f"{names}: expected two logits tensors of one shape (..., B, K) with K >= 2, "
                              f"got {tuple(a.shape)} and {tuple(b.shape)}")


def scan_loss(anchor_logits: Tensor, neighbor_logits: Tensor,
              entropy_weight: float = 5.0) -> tuple[Tensor, Tensor, Tensor]:
    """SCAN's loss of a batch of (anchor, neighbour) pairs.

    Args:
        anchor_logits: (B, K) head outputs of the anchors (or (H, B, K) for H heads at once).
        neighbor_logits: (B, K) head outputs of one mined neighbour of each anchor (same shape).
        entropy_weight: the weight of the entropy term (SCAN's ``configs/scan/scan_cifar10.yml``: 5.0).

    Returns:
        ``(total, consistency, entropy)``, each a scalar (or (H,) for H heads):
        ``consistency = -mean_b log sum_k p_a[b,k] p_n[b,k]`` with ``p = softmax(logits)``;
        ``entropy = -sum_k m_k log m_k`` of the mean anchor prediction ``m = mean_b p_a[b]`` (``m`` floored at
        1e-8 as SCAN does); ``total = consistency - entropy_weight * entropy``.
    """
    _check_pair(anchor_logits, neighbor_logits, "scan_loss")
    if entropy_weight < 0:
        raise SSLClusterError(f"entropy_weight={entropy_weight} must be >= 0")
    log_pa = F.log_softmax(anchor_logits, dim=-1)
    log_pn = F.log_softmax(neighbor_logits, dim=-1)
    # log <p_a, p_n> = logsumexp_k(log p_a + log p_n); SCAN computes the same as BCE(<p_a, p_n>, 1)
    consistency = -torch.logsumexp(log_pa + log_pn, dim=-1).mean(dim=-1)
    mean_p = log_pa.exp().mean(dim=-2).clamp(min=SCAN_ENTROPY_EPS)
    entropy = -(mean_p * mean_p.log()).sum(dim=-1)
    return consistency - entropy_weight * entropy, consistency, entropy


def temi_marginal_update(marginal: Tensor, teacher_anchor: Tensor, teacher_neighbor: Tensor,
                         momentum: float = 0.9, teacher_temperature: float = 0.1) -> Tensor:
    """TEMI's running estimate of each head's cluster marginal, one EMA step (no gradient).

    Args:
        marginal: (H, K) the current estimate (TEMI starts from uniform, 1/K).
        teacher_anchor, teacher_neighbor: (H, B, K) the teacher's logits of the anchors and of their neighbours.
        momentum: EMA momentum (TEMI's ``probs_momentum``: 0.9).
        teacher_temperature: softmax temperature of the teacher (TEMI's ``teacher_temp``: 0.1).

    Returns:
        (H, K) ``momentum * marginal + (1 - momentum) * mean over both views' 2B teacher predictions``.
    """
    _check_pair(teacher_anchor, teacher_neighbor, "temi_marginal_update")
    with torch.no_grad():
        probs = torch.cat([F.softmax(teacher_anchor / teacher_temperature, dim=-1),
                           F.softmax(teacher_neighbor / teacher_temperature, dim=-1)], dim=-2)
        return marginal * momentum + probs.mean(dim=-2) * (1.0 - momentum)


def temi_loss(student_anchor: Tensor, student_neighbor: Tensor, teacher_anchor: Tensor, teacher_neighbor: Tensor,
              marginal: Tensor, beta: float = 0.6, student_temperature: float = 0.1,
              teacher_temperature: float = 0.1) -> Tensor:
    """TEMI's loss of each head on a batch of (anchor, neighbour) pairs.

    Args:
        student_anchor, student_neighbor: (H, B, K) the student heads' logits of anchors and neighbours.
        teacher_anchor, teacher_neighbor: (H, B, K) the EMA teacher heads' logits of the same (no gradient flows
            into them).
        marginal: (H, K) each head's running cluster marginal ``q~`` (:func:`temi_marginal_update`, which TEMI
            applies with this batch's teacher predictions before the loss).
        beta: the exponent of the beta-PMI (TEMI's ``beta``: 0.6).
        student_temperature, teacher_temperature: softmax temperatures (TEMI's defaults: 0.1 and 0.1).

    Returns:
        (H,) per head ``1/2 sum over (s, t) in {(anchor, neighbour), (neighbour, anchor)} of
        mean_b[-w_b log sum_k (q_s(k|s_b) q_t(k|t_b))^beta / q~_k]``, where
        ``w_b = mean_h sum_k q_t(k|anchor_b) q_t(k|neighbour_b)`` (the teacher's agreement, averaged over the
        heads as TEMI does).
    """
    _check_pair(student_anchor, student_neighbor, "temi_loss (student)")
    _check_pair(teacher_anchor, teacher_neighbor, "temi_loss (teacher)")
    _check_pair(student_anchor, teacher_anchor, "temi_loss (student, teacher)")
    if marginal.shape != student_anchor.shape[:-2] + student_anchor.shape[-1:]:
        raise SSLClusterError(f"temi_loss: marginal has shape {tuple(marginal.shape)}, expected "
                              f"{tuple(student_anchor.shape[:-2] + student_anchor.shape[-1:])}")
    if beta <= 0:
        raise SSLClusterError(f"beta={beta} must be positive")
    log_sa = F.log_softmax(student_anchor / student_temperature, dim=-1)
    log_sn = F.log_softmax(student_neighbor / student_temperature, dim=-1)
    with torch.no_grad():
        log_ta = F.log_softmax(teacher_anchor / teacher_temperature, dim=-1)
        log_tn = F.log_softmax(teacher_neighbor / teacher_temperature, dim=-1)
        agreement = (log_ta.exp() * log_tn.exp()).sum(dim=-1)  # (..., B)
        weight = agreement.reshape(-1, agreement.shape[-1]).mean(dim=0)  # (B,), over the heads
        log_marginal = marginal.log().unsqueeze(-2)  # (..., 1, K)

    def pmi(log_s: Tensor, log_t: Tensor) -> Tensor:
        return torch.logsumexp(beta * (log_s + log_t) - log_marginal, dim=-1)  # (..., B)

    loss_n = -(weight * pmi(log_sn, log_ta)).mean(dim=-1)  # the student sees the neighbour, the teacher the anchor
    loss_a = -(weight * pmi(log_sa, log_tn)).mean(dim=-1)
    return (loss_n + loss_a) / 2
