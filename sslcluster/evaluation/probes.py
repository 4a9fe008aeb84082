"""Representation quality: weighted kNN (k=200, T=0.1 on L2-normalised features, as in lightly's benchmarks,
after Wu et al. 2018) and a linear probe (multinomial logistic regression).

Both scale past memory-sized arrays:

- **kNN** searches the train bank block by block with faiss (``faiss.knn``, inner product of L2-normalised rows =
  cosine similarity) and merges the blocks' top-k with ``faiss.ResultHeap``, so the bank stays memory-mapped and
  only one block of it is in memory at a time. The vote is lightly's (``knn_predict``: each neighbour adds
  ``exp(sim / T)`` to its class; lightly's function takes the whole bank as one tensor, hence the blocked search).
- **Linear probe** in torch on the run's device: standardised features, full-batch L-BFGS (torch's
  ``LBFGS`` with a strong-Wolfe line search) on the mean cross-entropy plus ``wd / 2 * ||W||^2``, each fit stopped
  by scikit-learn's rule (max |gradient| <= 1e-4 or 100 iterations, its defaults); the weight decay
  is chosen on a seeded, stratified validation part of the train split (never the test split), then the probe is
  refitted on the whole train split with it. L-BFGS runs in preconditioned coordinates (:class:`Preconditioner`:
  the eigenbasis of the features' second moment on a seeded sample of train rows), which changes the path, not
  the objective or its minimum, in far fewer loss evaluations (benchmarks/RESULTS.md). The fits run at full float32 precision (no TF32). scikit-learn's
  ``LogisticRegression`` (``probe_backend='sklearn'``) stays available for comparison
  (``benchmarks/probe_speed.py``).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress

log = logging.getLogger(__name__)

#: kNN bank rows searched per block (faiss.knn): 65,536 x 2,048 float32 = 512 MiB at most in memory.
KNN_BANK_BLOCK = 65_536
#: kNN queries per block (their top-k heap is (block, k) float32 + int64).
KNN_QUERY_BLOCK = 8_192


def _known(y: np.ndarray, what: str) -> np.ndarray:
    keep = np.asarray(y) >= 0
    if not keep.any():
        raise SSLClusterError(f"the {what} split has no held-out labels; kNN / linear probe need them")
    return keep


def _rows(x: np.ndarray, start: int, end: int, keep: np.ndarray) -> np.ndarray:
    """Rows ``[start, end)`` of ``x`` (a memory map is read only there) that are labelled, as a new float32
    contiguous array (callers normalise it in place)."""
    block = np.array(x[start:end], dtype=np.float32)  # one copy, whatever the input's type
    wanted = keep[start:end]
    return block if wanted.all() else np.ascontiguousarray(block[wanted])


def _l2(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised in place (zero rows stay zero); ``x`` (N, D) float32."""
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 200, t: float = 0.1, bank_block: int | None = None,
                 query_block: int | None = None) -> float:
    """Top-1 accuracy of lightly's weighted kNN with the labelled train rows as bank, the labelled test rows as
    queries. ``train_x`` (N, D) and ``test_x`` (M, D) may be memory maps: they are read in blocks, L2-normalised
    block by block (``bank_block``, ``query_block`` rows: default the module's constants). ``k`` is capped at the number of labelled bank rows."""
    import faiss

    bank_block = bank_block or KNN_BANK_BLOCK
    query_block = query_block or KNN_QUERY_BLOCK
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    bank_keep, query_keep = _known(train_y, "train"), _known(test_y, "test")
    bank_pos = np.flatnonzero(bank_keep)            # bank ids: positions of the labelled train rows
    bank_labels = torch.from_numpy(train_y[bank_pos])
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    kk = min(int(k), len(bank_pos))
    n_query = int(query_keep.sum())
    correct = 0
    with progress(n_query, "kNN probe", unit="img") as bar:
        for qs in range(0, len(test_y), query_block):
            q = _l2(_rows(test_x, qs, qs + query_block, query_keep))
            if len(q) == 0:
                continue
            heap = faiss.ResultHeap(len(q), kk, keep_max=True)
            offset = 0  # labelled bank rows before this block
            for bs in range(0, len(train_y), bank_block):
                b = _l2(_rows(train_x, bs, bs + bank_block, bank_keep))
                if len(b):
                    sim, idx = faiss.knn(q, b, min(kk, len(b)), metric=faiss.METRIC_INNER_PRODUCT)
                    heap.add_result(sim, idx + offset)
                offset += len(b)
            heap.finalize()
            weights = torch.from_numpy(heap.D).div(t).exp()                 # (Q, k), lightly's exp(sim / T)
            neighbours = bank_labels[torch.from_numpy(heap.I)]               # (Q, k)
            scores = torch.zeros(len(q), num_classes).scatter_add_(1, neighbours, weights)
            truth = test_y[qs:qs + query_block][query_keep[qs:qs + query_block]]
            correct += int((scores.argmax(dim=1).numpy() == truth).sum())
            bar.update(len(q))
    return correct / n_query


# -- linear probe ----------------------------------------------------------------------------------------------

#: weight decays tried on the validation part (per-sample mean loss + wd/2 ||W||^2). scikit-learn's default C=1
#: is wd = 1/N (1.7e-5 for 60,000 rows, 6e-4 for digits' 1,617): the grid brackets it for 100 to 100,000 rows;
#: the path is fitted from the strongest to the weakest, each fit starting from the last.
PROBE_WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4, 1e-5)
#: the part of the labelled train rows held aside to choose the weight decay (a common 10%; seeded, stratified).
PROBE_VAL_FRACTION = 0.1
#: below this many train values (N x D) the CPU probe runs on one thread: its matrices are then so small that
#: OpenMP's synchronisation dominates (benchmarks/RESULTS.md).
PROBE_ONE_THREAD_BELOW = 10_000_000
#: each fit stops as scikit-learn's ``LogisticRegression`` (lbfgs) does by default on the same mean objective: when
#: the largest absolute gradient entry is at most ``PROBE_TOL`` (its ``tol``) or after ``PROBE_MAX_ITER`` iterations
#: (its ``max_iter``); fewer iterations stop short of that criterion (benchmarks/RESULTS.md).
PROBE_TOL = 1e-4
PROBE_MAX_ITER = 100
#: train rows (seeded sample) whose second moment preconditions L-BFGS, chosen on CIFAR-10 pixels
#: (benchmarks/RESULTS.md); the product costs ``rows x D^2`` multiply-adds.
PROBE_PRECONDITION_ROWS = 10_000
#: above this many features the probe runs unpreconditioned: the eigendecomposition costs ``D^3``
#: (benchmarks/RESULTS.md).
PROBE_PRECONDITION_MAX_DIM = 4_096


@dataclass
class ProbeResult:
    """A linear probe's test top-1 with how it was chosen."""

    accuracy: float
    weight_decay: float | None = None
    val_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = "torch"
    #: loss-and-gradient evaluations of each fit (its weight decay, then "refit"): each is two passes over the rows
    evaluations: dict[str, int] = field(default_factory=dict)


def _standardiser(x: torch.Tensor, block: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (D,) of ``x`` (N, D), std floored so constant features stay finite. The variance is summed a
    block of rows at a time around the mean (faster than ``Tensor.std`` on wide inputs)."""
    mean = x.mean(dim=0)
    sq = torch.zeros_like(mean)
    for s in range(0, len(x), block):
        sq += (x[s:s + block] - mean).square_().sum(dim=0)
    std = (sq / max(len(x) - 1, 1)).sqrt_().clamp_min(1e-6)
    return mean, std


@dataclass
class Preconditioner:
    """Coordinates in which L-BFGS sees a nearly spherical problem. The Hessian of the mean cross-entropy in the
    weight ``W`` (C, D) is about ``S / C`` per class at the start (``S`` (D, D) the second moment of the
    standardised features, ``C`` classes, predictions near uniform), plus ``wd`` from the penalty; with
    ``S = V diag(lam) V^T`` and ``scale = (lam / C + wd)^-1/2`` (D,), the fit optimises ``U`` (C, D) with
    ``W = (U * scale) @ V^T``, where that model of the Hessian is the identity. Same objective, same minimum; on
    correlated features (pixels) L-BFGS needs far fewer iterations. Written here: torch's LBFGS takes no
    preconditioner, and scikit-learn's solvers none either."""

    vectors: torch.Tensor  # V (D, D), columns the eigenvectors of S
    values: torch.Tensor   # lam (D,), S's eigenvalues (clamped at 0)

    @classmethod
    def of(cls, x: torch.Tensor, rows: int, seed: int) -> Preconditioner:
        """From ``x`` (N, D) standardised: the second moment of ``rows`` of its rows drawn with ``seed`` (all when
        N <= rows). Uses the features only, never a label."""
        n = len(x)
        if n > rows:
            g = torch.Generator().manual_seed(seed)
            pick = torch.randperm(n, generator=g)[:rows].sort().values.to(x.device)
            sample = x[pick]
        else:
            sample = x
        second = sample.T @ sample / len(sample)
        values, vectors = torch.linalg.eigh(second)
        return cls(vectors, values.clamp_min(0))

    def scale(self, curvature: float, wd: float) -> torch.Tensor:
        """(D,) ``(curvature * lam + wd)^-1/2``, floored at 1e-6 inside the root (a zero weight decay on a
        rank-deficient sample stays finite)."""
        return (self.values * curvature + wd).clamp_min(1e-6).rsqrt()


def lbfgs_evaluations(max_iter: int) -> int:
    """The most loss evaluations one fit may make: torch's ``LBFGS`` default ``max_eval`` (1.25 x ``max_iter``)."""
    return max_iter * 5 // 4


class _Converged(Exception):
    """Raised by a fit's closure at the first point that meets the stopping rule."""


def _fit_lbfgs(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, max_iter: int = PROBE_MAX_ITER,
               init: tuple[torch.Tensor, torch.Tensor] | None = None,
               tol: float = PROBE_TOL, bar: Any = None,
               preconditioner: Preconditioner | None = None,
               counts: dict[str, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on ``x`` (N, D) standardised, ``y`` (N,) int64 -> weight (C, D), bias (C,)
    by full-batch L-BFGS until max |gradient| <= ``tol`` (the gradient of the objective in ``W`` and the bias,
    scikit-learn's rule, checked at every point evaluated) or ``max_iter`` iterations; ``init`` warm-starts it;
    ``preconditioner`` (see :class:`Preconditioner`) changes the coordinates L-BFGS moves in, not the objective.
    The weight is (C, D) as in ``nn.Linear``: the gradient is then ``G^T @ x``, faster on CPU than the
    ``x^T @ G`` a (D, C) weight needs. ``bar`` (a :func:`~sslcluster.progress.progress` counter) advances
    by one per loss evaluation and, at the end, by the rest of the fit's budget of ``lbfgs_evaluations(max_iter)``;
    ``counts`` (a dict) receives the number of evaluations under ``"fit"``."""
    d = x.shape[1]
    evaluations = 0
    w0 = init[0] if init else torch.zeros(num_classes, d, device=x.device)
    if preconditioner is None:
        def weight(v: torch.Tensor) -> torch.Tensor:
            return v

        u = w0.clone()
    else:
        vectors, scale = preconditioner.vectors, preconditioner.scale(1.0 / num_classes, wd)

        def weight(v: torch.Tensor) -> torch.Tensor:  # W (C, D) of the coordinates U: (U * scale) @ V^T
            return ((v * scale) @ vectors.T).contiguous()

        u = (w0 @ vectors) / scale  # the inverse, V being orthogonal
    u.requires_grad_(True)
    b = (init[1].clone() if init else torch.zeros(num_classes, device=x.device)).requires_grad_(True)
    # LBFGS's own gradient test would look at U's gradient; the rule is checked on W's in the closure instead
    opt = torch.optim.LBFGS([u, b], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=1e-10)
    done: tuple[torch.Tensor, torch.Tensor] | None = None

    def closure() -> torch.Tensor:
        nonlocal evaluations, done
        evaluations += 1
        if bar is not None:
            bar.update(1)
        opt.zero_grad()
        w = weight(u)
        w.retain_grad()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w, b), y) + 0.5 * wd * (w * w).sum()
        loss.backward()
        assert w.grad is not None and b.grad is not None
        if max(float(w.grad.abs().max()), float(b.grad.abs().max())) <= tol:
            done = (w.detach().clone(), b.detach().clone())
            raise _Converged
        return loss

    try:
        opt.step(closure)
    except _Converged:
        pass
    if bar is not None:
        bar.update(max(lbfgs_evaluations(max_iter) - evaluations, 0))
    if counts is not None:
        counts["fit"] = evaluations
    if done is not None:
        return done
    log.info("linear probe: weight decay %g stopped after %d loss evaluations before max |gradient| <= %g", wd,
             evaluations, tol)
    with torch.no_grad():
        return weight(u).detach(), b.detach()


@torch.no_grad()
def _scores(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
            block: int = 65_536) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of the probe (w (C, D), b (C,)) on ``x`` (N, D), ``y`` (N,)."""
    correct, loss = 0, 0.0
    for s in range(0, len(x), block):
        logits = torch.nn.functional.linear(x[s:s + block], w, b)
        correct += int((logits.argmax(dim=1) == y[s:s + block]).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y[s:s + block], reduction="sum"))
    return correct / max(len(x), 1), loss / max(len(x), 1)


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, val) of ``labels`` (N,): a seeded split, stratified where every class has two rows or
    more (scikit-learn's ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    pos = np.arange(len(labels))
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    stratify = labels if counts.min() >= 2 and fraction * len(labels) >= len(counts) else None
    fit, val = train_test_split(pos, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


def _to_tensor(x: np.ndarray, keep: np.ndarray, device: torch.device, block: int = 65_536,
               order: np.ndarray | None = None) -> torch.Tensor:
    """The labelled rows of ``x`` (a memory map is read in blocks) as one (N', D) float32 tensor on ``device``;
    with ``order`` (a permutation of the N' labelled rows), row ``order[i]`` lands at position ``i``."""
    n = int(keep.sum())
    out = torch.empty(n, x.shape[1], dtype=torch.float32, device=device)
    where = None
    if order is not None:
        where = np.empty(n, dtype=np.int64)
        where[order] = np.arange(n)
    filled = 0
    for s in range(0, len(x), block):
        rows = torch.from_numpy(_rows(x, s, s + block, keep)).to(device)
        if where is None:
            out[filled:filled + len(rows)] = rows
        else:
            out.index_copy_(0, torch.from_numpy(where[filled:filled + len(rows)]).to(device), rows)
        filled += len(rows)
    return out


@contextmanager
def _full_float32() -> Iterator[None]:
    """float32 matmuls at full precision inside, the process's setting restored after: training on a GPU may have
    allowed TF32 (``trainer.speed.matmul_precision=high``), whose 10-bit mantissa leaves gradients too coarse for
    the 1e-4 stopping rule and the second moment too coarse for the preconditioner."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextmanager
def _threads_for(n_values: int, device: torch.device) -> Iterator[None]:
    """One torch thread for a small CPU probe (see PROBE_ONE_THREAD_BELOW), the process's setting restored."""
    before = torch.get_num_threads()
    small = device.type == "cpu" and n_values < PROBE_ONE_THREAD_BELOW
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0,
                 device: str | torch.device = "cpu", weight_decays: tuple[float, ...] = PROBE_WEIGHT_DECAYS,
                 val_fraction: float = PROBE_VAL_FRACTION, max_iter: int = PROBE_MAX_ITER,
                 tol: float = PROBE_TOL, precondition: bool = True) -> ProbeResult:
    """Torch linear probe: weight decay chosen on a validation part of the labelled train rows, refitted on all of
    them, scored on the labelled test rows; each fit runs until max |gradient| <= ``tol`` or ``max_iter``
    iterations, preconditioned (:class:`Preconditioner`) unless ``precondition`` is false or the features have
    more than ``PROBE_PRECONDITION_MAX_DIM`` dimensions. Arrays (N, D) may be memory maps (read once, in
    blocks)."""
    if not weight_decays:
        raise SSLClusterError("evaluate.probe.weight_decays is empty")
    if not 0 < val_fraction < 1:
        raise SSLClusterError(f"evaluate.probe.val_fraction={val_fraction} must be between 0 and 1")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SSLClusterError(f"evaluate.probe.max_iter={max_iter!r} must be a whole number of iterations, 1 or more")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise SSLClusterError(f"evaluate.probe.tol={tol!r} must be a positive number")
    if not isinstance(precondition, bool):
        raise SSLClusterError(f"evaluate.probe.precondition={precondition!r} must be true or false")
    device = torch.device(device)
    with _threads_for(int(train_x.shape[0]) * int(train_x.shape[1]), device), _full_float32():
        return _linear_probe(train_x, train_y, test_x, test_y, seed, device, weight_decays, val_fraction, max_iter,
                             float(tol), precondition)


def _linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int,
                  device: torch.device, weight_decays: tuple[float, ...], val_fraction: float,
                  max_iter: int, tol: float, precondition: bool) -> ProbeResult:
    start = time.monotonic()
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    tr_keep, te_keep = _known(train_y, "train"), _known(test_y, "test")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(seed)
    labels = train_y[tr_keep]
    fit, val = validation_split(labels, val_fraction, seed)
    # the rows are laid out fit part first, validation part last: both are then views, not copies
    x = _to_tensor(train_x, tr_keep, device, order=np.concatenate([fit, val]))
    y = torch.from_numpy(np.concatenate([labels[fit], labels[val]])).to(device)
    mean, std = _standardiser(x)  # statistics of the train split only (no labels, no test rows)
    x.sub_(mean).div_(std)
    pre = None
    if precondition and x.shape[1] <= PROBE_PRECONDITION_MAX_DIM:
        pre = Preconditioner.of(x, PROBE_PRECONDITION_ROWS, seed)
    elif precondition:
        log.info("linear probe: %d features > %d, L-BFGS unpreconditioned", x.shape[1], PROBE_PRECONDITION_MAX_DIM)
    log.info("linear probe: %d x %d train features, weight decay from %s on %d validation rows", *x.shape,
             list(weight_decays), len(val))
    nf = len(fit)
    xf, yf, xv, yv = x[:nf], y[:nf], x[nf:], y[nf:]
    scores: dict[str, float] = {}
    evaluations: dict[str, int] = {}
    count: dict[str, int] = {}
    best: tuple[float, float, tuple[torch.Tensor, torch.Tensor]] | None = None
    params: tuple[torch.Tensor, torch.Tensor] | None = None
    # progress over the fits' evaluation budgets (one fit per weight decay, then the refit): a fit that converges
    # early moves the bar to the end of its budget, so the time left is an upper bound
    bar = progress((len(weight_decays) + 1) * lbfgs_evaluations(max_iter), "linear probe", unit="eval")
    for wd in sorted(weight_decays, reverse=True):  # strongest first: each fit warm-starts the next
        params = _fit_lbfgs(xf, yf, num_classes, float(wd), max_iter, init=params, tol=tol, bar=bar,
                            preconditioner=pre, counts=count)
        acc, loss = _scores(xv, yv, *params)
        scores[repr(float(wd))] = acc
        evaluations[repr(float(wd))] = count["fit"]
        # chosen by validation cross-entropy: on a small validation part accuracy ties often, the loss rarely
        if best is None or loss < best[0]:
            best = (loss, float(wd), params)
    del xf, yf, xv, yv
    assert best is not None
    _, wd, params = best
    w, b = _fit_lbfgs(x, y, num_classes, wd, max_iter, init=params, tol=tol, bar=bar, preconditioner=pre,
                      counts=count)
    evaluations["refit"] = count["fit"]
    bar.close()
    del x
    xt = _to_tensor(test_x, te_keep, device).sub_(mean).div_(std)
    acc, _ = _scores(xt, torch.from_numpy(test_y[te_keep]).to(device), w, b)
    seconds = time.monotonic() - start
    log.info("linear probe: weight decay %g (validation top-1 %s), test top-1 %.4f in %.1f s, loss evaluations %s",
             wd, scores, acc, seconds, evaluations)
    return ProbeResult(acc, wd, scores, seconds, "torch", evaluations)


def sklearn_linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                         max_iter: int = 1000, seed: int = 0) -> ProbeResult:
    """scikit-learn's logistic regression (lbfgs, C=1) on standardised features: the reference the torch probe
    is measured against."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr_keep, te_keep = _known(train_y, "train"), _known(test_y, "test")
    start = time.monotonic()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(np.asarray(train_x, dtype=np.float32)[tr_keep], np.asarray(train_y)[tr_keep])
    acc = float((clf.predict(np.asarray(test_x, dtype=np.float32)[te_keep]) == np.asarray(test_y)[te_keep]).mean())
    return ProbeResult(acc, None, {}, time.monotonic() - start, "sklearn")


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          seed: int = 0, device: str | torch.device = "cpu", backend: str = "torch",
                          **kwargs: Any) -> float:
    """Top-1 test accuracy of the linear probe (``backend``: torch, the default, or sklearn)."""
    if backend == "torch":
        return linear_probe(train_x, train_y, test_x, test_y, seed=seed, device=device, **kwargs).accuracy
    if backend == "sklearn":
        return sklearn_linear_probe(train_x, train_y, test_x, test_y, seed=seed, **kwargs).accuracy
    raise SSLClusterError(f"evaluate.probe.backend={backend!r}: use torch or sklearn")
