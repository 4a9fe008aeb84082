"""SCAN's and TEMI's losses against references written from the papers' formulas, element by element, on fixed
tensors; and the near-misses (a wrong variant of each formula) that the comparison tells apart."""

from __future__ import annotations

import math

import pytest
import torch

from sslcluster.clustering.heads.losses import scan_loss, temi_loss, temi_marginal_update
from sslcluster.errors import SSLClusterError


def _logits(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    s = sum(e)
    return [v / s for v in e]


def scan_reference(anchors, neighbors, w: float, entropy_of_mean: bool = True) -> tuple[float, float, float]:
    """SCAN, eq. 2: -1/|D| sum log <Phi(X), Phi(k)> + w sum_c Phi'^c log Phi'^c, Phi' = mean of Phi over D."""
    pa = [_softmax(r) for r in anchors.tolist()]
    pn = [_softmax(r) for r in neighbors.tolist()]
    b, k = len(pa), len(pa[0])
    cons = -sum(math.log(sum(pa[i][c] * pn[i][c] for c in range(k))) for i in range(b)) / b
    if entropy_of_mean:
        mean = [max(sum(pa[i][c] for i in range(b)) / b, 1e-8) for c in range(k)]
        ent = -sum(m * math.log(m) for m in mean)
    else:  # wrong variant: the mean of the per-sample entropies
        ent = -sum(sum(p * math.log(p) for p in pa[i]) for i in range(b)) / b
    return cons - w * ent, cons, ent


def temi_reference(sa, sn, ta, tn, marginal, beta: float, ts: float = 0.1, tt: float = 0.1,
                   weighted: bool = True, symmetric: bool = True) -> list[float]:
    """TEMI, eq. 8 with the pair weight: per head, for the two (student view, teacher view) pairs,
    mean_b -w_b log sum_k (q_s q_t)^beta / q~_k, with w_b the teacher's agreement averaged over heads."""
    h, b, k = sa.shape
    q = {name: [[_softmax(r, t) for r in x[j].tolist()] for j in range(h)]
         for name, x, t in (("sa", sa, ts), ("sn", sn, ts), ("ta", ta, tt), ("tn", tn, tt))}
    w = [sum(sum(q["ta"][j][i][c] * q["tn"][j][i][c] for c in range(k)) for j in range(h)) / h if weighted else 1.0
         for i in range(b)]
    out = []
    for j in range(h):
        pairs = [("sn", "ta"), ("sa", "tn")] if symmetric else [("sn", "ta")]
        total = 0.0
        for s, t in pairs:
            total += sum(-w[i] * math.log(sum((q[s][j][i][c] * q[t][j][i][c]) ** beta / marginal[j][c].item()
                                              for c in range(k))) for i in range(b)) / b
        out.append(total / len(pairs))
    return out


def test_scan_loss_equals_the_formula():
    a, n = _logits(6, 4, seed=0), _logits(6, 4, seed=1)
    total, cons, ent = scan_loss(a, n, entropy_weight=5.0)
    ref = scan_reference(a, n, 5.0)
    assert total.item() == pytest.approx(ref[0], rel=1e-9)
    assert cons.item() == pytest.approx(ref[1], rel=1e-9)
    assert ent.item() == pytest.approx(ref[2], rel=1e-9)
    # the near-miss (entropy of each prediction instead of the mean prediction's) is far from it
    assert total.item() != pytest.approx(scan_reference(a, n, 5.0, entropy_of_mean=False)[0], rel=1e-3)


def test_scan_loss_of_several_heads_is_each_head_alone():
    a, n = _logits(3, 5, 4, seed=2), _logits(3, 5, 4, seed=3)
    total, _, _ = scan_loss(a, n, entropy_weight=2.0)
    assert total.shape == (3,)
    for h in range(3):
        assert total[h].item() == pytest.approx(scan_reference(a[h], n[h], 2.0)[0], rel=1e-9)


def test_scan_loss_is_finite_where_the_product_underflows():
    a = torch.tensor([[300.0, -300.0]], dtype=torch.float64)
    n = torch.tensor([[-300.0, 300.0]], dtype=torch.float64)
    total, cons, _ = scan_loss(a, n)
    assert torch.isfinite(total) and cons.item() == pytest.approx(600.0 - math.log(2), rel=1e-9)


def test_temi_loss_equals_the_formula():
    h, b, k = 2, 5, 4
    sa, sn, ta, tn = (_logits(h, b, k, seed=s) for s in (10, 11, 12, 13))
    marginal = torch.softmax(_logits(h, k, seed=14), dim=-1)
    got = temi_loss(sa, sn, ta, tn, marginal, beta=0.6)
    assert got.shape == (h,)
    ref = temi_reference(sa, sn, ta, tn, marginal, beta=0.6)
    assert got.tolist() == pytest.approx(ref, rel=1e-9)
    for wrong in (temi_reference(sa, sn, ta, tn, marginal, beta=1.0),
                  temi_reference(sa, sn, ta, tn, marginal, beta=0.6, weighted=False),
                  temi_reference(sa, sn, ta, tn, marginal, beta=0.6, symmetric=False),
                  temi_reference(sa, sn, ta, tn, torch.full_like(marginal, 1 / k), beta=0.6)):
        assert got.tolist() != pytest.approx(wrong, rel=1e-3)


def test_temi_gradient_reaches_the_student_only():
    sa, sn = _logits(1, 4, 3, seed=20).requires_grad_(), _logits(1, 4, 3, seed=21).requires_grad_()
    ta, tn = _logits(1, 4, 3, seed=22).requires_grad_(), _logits(1, 4, 3, seed=23).requires_grad_()
    temi_loss(sa, sn, ta, tn, torch.full((1, 3), 1 / 3, dtype=torch.float64)).sum().backward()
    assert sa.grad is not None and sn.grad is not None and ta.grad is None and tn.grad is None


def test_temi_marginal_update_is_an_ema_of_both_views_teacher_predictions():
    ta, tn = _logits(2, 3, 4, seed=30), _logits(2, 3, 4, seed=31)
    m0 = torch.full((2, 4), 0.25, dtype=torch.float64)
    got = temi_marginal_update(m0, ta, tn, momentum=0.9, teacher_temperature=0.1)
    for j in range(2):
        preds = [_softmax(r, 0.1) for r in ta[j].tolist() + tn[j].tolist()]
        mean = [sum(p[c] for p in preds) / len(preds) for c in range(4)]
        assert got[j].tolist() == pytest.approx([0.9 * 0.25 + 0.1 * m for m in mean], rel=1e-9)
    assert got.sum(dim=-1).tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("call, match", [
    (lambda: scan_loss(torch.zeros(4, 3), torch.zeros(4, 3), entropy_weight=-1.0), "entropy_weight=-1.0"),
    (lambda: scan_loss(torch.zeros(4, 3), torch.zeros(4, 2)), r"\(4, 3\) and \(4, 2\)"),
    (lambda: temi_loss(*(torch.zeros(1, 4, 3),) * 4, torch.ones(1, 3) / 3, beta=0.0), "beta=0.0"),
    (lambda: temi_loss(*(torch.zeros(1, 4, 3),) * 4, torch.ones(3) / 3), r"marginal has shape \(3,\)"),
])
def test_bad_loss_input_is_one_line(call, match):
    with pytest.raises(SSLClusterError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
