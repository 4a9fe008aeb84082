"""kNN through faiss in blocks (bank never read whole, same predictions as lightly's ``knn_predict``) and the torch
linear probe (weight decay chosen on train only, within 0.5 point of scikit-learn on digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.utils.benchmarking import knn_predict
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from knn_reference import weighted_knn
from sslcluster.errors import SSLClusterError
from sslcluster.evaluation import probes


class RowReader:
    """An (N, D) array that records the largest number of rows any single read returned (stands in for a memory
    map: reading a block of it is what costs memory)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.max_rows = 0

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, item):
        out = self.a[item]
        self.max_rows = max(self.max_rows, len(out) if out.ndim else 1)
        return out

    def __array__(self, dtype=None, copy=None):
        self.max_rows = len(self.a)
        return self.a if dtype is None else self.a.astype(dtype)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=0)


def lightly_top1(tx, ty, qx, qy, k=200, t=0.1) -> float:
    keep_b, keep_q = ty >= 0, qy >= 0
    bank = torch.nn.functional.normalize(torch.from_numpy(tx[keep_b]), dim=1).t().contiguous()
    q = torch.nn.functional.normalize(torch.from_numpy(qx[keep_q]), dim=1)
    pred = knn_predict(q, bank, torch.from_numpy(ty[keep_b]), int(max(ty.max(), qy.max())) + 1,
                       knn_k=min(k, int(keep_b.sum())), knn_t=t)
    return float((pred[:, 0].numpy() == qy[keep_q]).mean())


def test_blocked_knn_equals_lightly_and_reads_the_bank_in_blocks(digits, monkeypatch):
    tx, qx, ty, qy = digits
    ty = ty.copy()
    ty[::7] = -1  # unlabelled bank rows are left out of the bank
    monkeypatch.setattr(probes, "KNN_BANK_BLOCK", 256, raising=False)
    monkeypatch.setattr(probes, "KNN_QUERY_BLOCK", 100, raising=False)
    bank = RowReader(tx)
    got = probes.knn_accuracy(bank, ty, qx, qy, k=200, t=0.1)
    ref, ties = weighted_knn(tx[ty >= 0], ty[ty >= 0], qx, qy)
    assert abs(got - lightly_top1(tx, ty, qx, qy)) <= ties / len(qy)  # only tied queries may go the other way
    assert abs(got - ref) <= ties / len(qy)
    assert bank.max_rows <= 256, f"the bank was read {bank.max_rows} rows at once"


def test_knn_k_larger_than_the_bank(digits):
    tx, qx, ty, qy = digits
    got = probes.knn_accuracy(tx[:50], ty[:50], qx, qy, k=200, t=0.1)
    ref, ties = weighted_knn(tx[:50], ty[:50], qx, qy)
    assert abs(got - lightly_top1(tx[:50], ty[:50], qx, qy)) <= ties / len(qy) and abs(got - ref) <= ties / len(qy)


def test_torch_probe_within_half_a_point_of_sklearn_on_digits(digits):
    tx, qx, ty, qy = digits
    r = probes.linear_probe(tx, ty, qx, qy, seed=0)
    s = probes.sklearn_linear_probe(tx, ty, qx, qy, seed=0)
    assert r.accuracy >= s.accuracy - 0.005, (r, s)
    assert r.weight_decay in probes.PROBE_WEIGHT_DECAYS and len(r.val_accuracy) == len(probes.PROBE_WEIGHT_DECAYS)


@pytest.mark.parametrize("row_order", ["given", "permuted"])
@pytest.mark.parametrize("preconditioned", [False, True])
def test_probe_fit_stops_where_sklearn_does_and_scores_as_it_does(digits, preconditioned, row_order):
    """A fit at scikit-learn's C=1 (wd = 1/N) with the probe's default settings ends at scikit-learn's convergence
    criterion (max |gradient| of the mean objective in the weight and bias <= its tol, 1e-4, also when L-BFGS
    moves in preconditioned coordinates) and predicts as scikit-learn's LogisticRegression fitted to the same
    standardised rows, within a stated tolerance: both stop inside the tolerance of one strictly convex objective,
    not at its minimum, so their class probabilities differ a little and test rows near a tie between two classes
    may go either way (which way depends on the summation order: the CPU, the thread count, here the order of the
    train rows). Asserted: probabilities within 0.25 of each other, at most 1% of the test rows predicted
    differently, top-1 within 1% of scikit-learn's; never which way a near-tied row goes."""
    from sklearn.linear_model import LogisticRegression

    tx, qx, ty, qy = digits
    if row_order == "permuted":  # the same objective summed in another order
        perm = np.random.default_rng(1).permutation(len(tx))
        tx, ty = tx[perm], ty[perm]
    x, y = torch.from_numpy(tx), torch.from_numpy(ty)
    mean, std = probes._standardiser(x)
    x = (x - mean) / std
    wd = 1.0 / len(x)
    pre = probes.Preconditioner.of(x, probes.PROBE_PRECONDITION_ROWS, seed=0) if preconditioned else None
    w, b = probes._fit_lbfgs(x, y, 10, wd, probes.PROBE_MAX_ITER, preconditioner=pre)
    assert objective(x, y, w, b, wd)[1] <= 1e-4
    q = (torch.from_numpy(qx) - mean) / std
    ours = torch.nn.functional.linear(q, w, b).softmax(dim=1).numpy()
    theirs = LogisticRegression(C=1.0).fit(x.numpy(), ty).predict_proba(q.numpy())
    assert np.abs(ours - theirs).max() <= 0.25
    assert (ours.argmax(axis=1) != theirs.argmax(axis=1)).sum() <= 0.01 * len(qy)
    top1_ours, top1_theirs = (ours.argmax(axis=1) == qy).mean(), (theirs.argmax(axis=1) == qy).mean()
    assert abs(top1_ours - top1_theirs) <= 0.01 and top1_theirs > 0.9, (top1_ours, top1_theirs)


def correlated(n: int = 3000, d: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised features that are, like pixels, mostly a few strong directions (8 latent factors mixed into
    ``d`` columns) plus weak ones (noise at a tenth of the scale); the labels, like a class's fine detail, depend on
    both. (n, d) float32 and (n,) int64 with 5 classes."""
    g = torch.Generator().manual_seed(seed)
    z, noise = torch.randn(n, 8, generator=g), torch.randn(n, d, generator=g)
    x = z @ torch.randn(8, d, generator=g) + 0.1 * noise
    y = (z[:, :4] @ torch.randn(4, 5, generator=g) + 0.3 * noise @ torch.randn(d, 5, generator=g)).argmax(dim=1)
    mean, std = probes._standardiser(x)
    return (x - mean) / std, y


def objective(x, y, w, b, wd) -> tuple[float, float]:
    """The fit's objective and its max |gradient| (in the weight and bias) at (w, b)."""
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w, b), y) + 0.5 * wd * (w * w).sum()
    loss.backward()
    return float(loss.detach()), float(torch.cat([w.grad.flatten(), b.grad]).abs().max())


def test_preconditioned_fit_reaches_the_same_minimum_in_far_fewer_evaluations():
    """On correlated features the preconditioner changes L-BFGS's path, not where it ends: the preconditioned fit
    meets the stopping rule at an objective no higher than the plain fit's, in under a quarter of its loss
    evaluations. The plain fit may stall in float32 just short of the rule (where depends on the summation order:
    the CPU, the thread count), so it is held to the invariant only: its objective within 1e-3 of the minimum and
    its predictions those of the preconditioned fit on all but near-tied rows (at most 2%). The preconditioner sees
    only the features."""
    x, y = correlated()
    wd = 1e-4
    plain, pre = {}, {}
    w0, b0 = probes._fit_lbfgs(x, y, 5, wd, max_iter=500, counts=plain)
    p = probes.Preconditioner.of(x, rows=2000, seed=0)
    w1, b1 = probes._fit_lbfgs(x, y, 5, wd, max_iter=500, preconditioner=p, counts=pre)
    (f0, g0), (f1, g1) = objective(x, y, w0, b0, wd), objective(x, y, w1, b1, wd)
    assert g1 <= probes.PROBE_TOL, g1
    assert f1 <= f0 + 1e-6 and f0 - f1 <= 1e-3, (f1, f0, g0)
    agree = (torch.nn.functional.linear(x, w0, b0).argmax(1) == torch.nn.functional.linear(x, w1, b1).argmax(1))
    assert float(agree.float().mean()) >= 0.98
    assert pre["fit"] * 4 < plain["fit"], (pre, plain)


def test_probe_skips_the_preconditioner_above_its_dimension_cap(digits, monkeypatch, caplog):
    """Above ``PROBE_PRECONDITION_MAX_DIM`` features (its eigendecomposition costs D^3) the probe is the
    unpreconditioned one, and says so once."""
    import logging

    tx, qx, ty, qy = digits
    kw = dict(seed=0, weight_decays=(1e-2, 1e-4), max_iter=30)
    plain = probes.linear_probe(tx, ty, qx, qy, precondition=False, **kw)
    assert probes.linear_probe(tx, ty, qx, qy, **kw).evaluations != plain.evaluations  # it does act below the cap
    monkeypatch.setattr(probes, "PROBE_PRECONDITION_MAX_DIM", 63)
    caplog.set_level(logging.INFO, logger="sslcluster.evaluation.probes")
    capped = probes.linear_probe(tx, ty, qx, qy, **kw)
    assert (capped.accuracy, capped.evaluations) == (plain.accuracy, plain.evaluations)
    assert "linear probe: 64 features > 63, L-BFGS unpreconditioned" in caplog.messages


def test_probe_runs_at_full_float32_precision_and_restores_the_setting(digits, monkeypatch):
    """A GPU run's trainer may have allowed TF32 matmuls for training (trainer.speed.matmul_precision=high): the
    probe's fits run at 'highest' all the same, and the process's setting is back afterwards."""
    tx, qx, ty, qy = digits
    seen = []
    fit = probes._fit_lbfgs

    def spy(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return fit(*args, **kwargs)

    monkeypatch.setattr(probes, "_fit_lbfgs", spy)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        probes.linear_probe(tx, ty, qx, qy, weight_decays=(1e-2,), max_iter=5)
        assert seen == ["highest", "highest"]  # the weight decay's fit and the refit
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_probe_leaves_its_inputs_as_they_were(digits):
    """kNN normalises and the probe standardises copies of the rows, never the caller's arrays."""
    tx, qx, ty, qy = digits
    before = tx.copy(), qx.copy()
    probes.knn_accuracy(tx, ty, qx, qy)
    probes.linear_probe(tx, ty, qx, qy, weight_decays=(1e-2,), max_iter=5)
    assert np.array_equal(tx, before[0]) and np.array_equal(qx, before[1])


def test_probe_choice_never_sees_the_test_labels(digits):
    """The weight decay and the validation figures are the same whatever the test labels are."""
    tx, qx, ty, qy = digits
    a = probes.linear_probe(tx, ty, qx, qy, seed=0, weight_decays=(1e-2, 1e-4), max_iter=30)
    shuffled = np.random.default_rng(0).permutation(qy)
    b = probes.linear_probe(tx, ty, qx, shuffled, seed=0, weight_decays=(1e-2, 1e-4), max_iter=30)
    assert a.weight_decay == b.weight_decay and a.val_accuracy == b.val_accuracy
    assert a.accuracy != b.accuracy  # the test labels are only scored against


def test_probe_settings_refuse_unknown_keys_and_cuda_without_gpu():
    from sslcluster.stages.evaluate import probe_settings

    cfg = OmegaConf.create({"evaluate": {"probe": {"backend": "torch", "device": "cpu", "lr": 0.1}}})
    with pytest.raises(SSLClusterError, match=r"evaluate.probe: unknown keys \['lr'\]"):
        probe_settings(cfg)
    if not torch.cuda.is_available():
        cfg = OmegaConf.create({"evaluate": {"probe": {"device": "cuda"}}})
        with pytest.raises(SSLClusterError, match="evaluate.probe.device='cuda'"):
            probe_settings(cfg)
    x, y = np.zeros((4, 2), np.float32), np.arange(4) % 2
    with pytest.raises(SSLClusterError, match=r"^evaluate.probe.tol=0 must be a positive number$"):
        probes.linear_probe(x, y, x, y, tol=0)
    with pytest.raises(SSLClusterError, match=r"^evaluate.probe.max_iter=2.5 must be a whole number of iterations"):
        probes.linear_probe(x, y, x, y, max_iter=2.5)
    with pytest.raises(SSLClusterError, match=r"^evaluate.probe.precondition='yes' must be true or false$"):
        probes.linear_probe(x, y, x, y, precondition="yes")
    cfg = OmegaConf.create({"evaluate": {"probe": {"device": "cpu", "precondition": False}}})
    assert probe_settings(cfg)["precondition"] is False
    with pytest.raises(SSLClusterError, match="evaluate.probe.backend='svm'"):
        probes.linear_probe_accuracy(np.zeros((4, 2)), np.arange(4) % 2, np.zeros((2, 2)), np.arange(2),
                                     backend="svm")
