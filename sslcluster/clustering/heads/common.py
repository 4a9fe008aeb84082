"""What the learned clustering heads share: neighbours mined with faiss, H heads evaluated as one batched module,
and the training scaffolding (mini-batches gathered from memory-mapped rows, seeded, on a GPU where available;
the head chosen by its own loss; the training curve).

SCAN (:mod:`sslcluster.clustering.heads.scan`) and TEMI (:mod:`sslcluster.clustering.heads.temi`) differ only in
their loss, their head and their optimiser; both subclass :class:`LearnedHeads`. No library provides heads trained
on neighbour pairs of precomputed embeddings, so the loop is written here; the parts a library has are used
(faiss for the neighbours, torch for the modules and optimisers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from sslcluster.clustering.base import ClusteringAlgorithm, Rows
from sslcluster.clustering.checks import KEY, check_choice, check_k, check_positive
from sslcluster.clustering.preprocess import l2_normalize
from sslcluster.errors import SSLClusterError

#: rows per faiss search and per block when every point's prediction is computed.
BLOCK = 16_384
FEATURES = ("backbone", "projection")


def pair_block(heads: int, pairs: int, k: int, budget: int = 1 << 22) -> int:
    """Points per block when a graph-wide loss holds (heads, block, pairs, k) numbers: ``budget`` of them."""
    return max(1, budget // max(1, heads * pairs * k))


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available; else the named device (refused when it is CUDA and none is present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSLClusterError(f"{KEY}.device={name!r} but no CUDA device is available")
    return torch.device(name)


def mine_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours by cosine similarity of every row of ``points`` (N, D), self included:
    (N, k + 1) int64 row indices, most similar first (SCAN's ``utils/memory.py``: a faiss ``IndexFlatIP`` on
    L2-normalised features searched for ``topk + 1``, the point itself among them)."""
    import faiss

    n = int(points.shape[0])
    if not 1 <= k < n:
        raise SSLClusterError(f"{KEY}.num_neighbors={k} must be between 1 and the number of points - 1 ({n - 1})")
    x = np.ascontiguousarray(l2_normalize(np.asarray(points, dtype=np.float32)))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    out = np.empty((n, k + 1), dtype=np.int64)
    for s in range(0, n, BLOCK):
        _, idx = index.search(x[s:s + BLOCK], k + 1)
        out[s:s + BLOCK] = idx
    return out


class BatchedLinear(nn.Module):
    """H independent linear maps (in -> out) applied as one batched matrix product: (H, B, in) -> (H, B, out).
    Each head is initialised as ``nn.Linear`` initialises itself (``init_std``: a truncated normal instead, as
    TEMI's DINO head does, biases zero)."""

    def __init__(self, heads: int, d_in: int, d_out: int, bias: bool = True, init_std: float | None = None) -> None:
        super().__init__()
        layers = [nn.Linear(d_in, d_out, bias=bias) for _ in range(heads)]
        if init_std is not None:
            for lin in layers:
                nn.init.trunc_normal_(lin.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
                if bias:
                    nn.init.zeros_(lin.bias)
        self.weight = nn.Parameter(torch.stack([lin.weight.detach().T for lin in layers]))  # (H, in, out)
        self.bias = nn.Parameter(torch.stack([lin.bias.detach()[None] for lin in layers])) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, in) shared by the heads, or (H, B, in) -> (H, B, out)."""
        if x.ndim == 2:
            out = torch.einsum("bi,hio->hbo", x, self.weight)
        else:
            out = torch.bmm(x, self.weight)
        return out if self.bias is None else out + self.bias


class MultiHead(nn.Module):
    """``heads`` clustering heads on (B, D) features -> logits (H, B, K), batched.

    ``kind``: ``linear`` (SCAN's ``ClusteringModel``: one ``nn.Linear`` per head), ``mlp`` (Linear-ReLU-Linear
    through ``hidden_dim``) or ``dino`` (TEMI's ``DINOHead`` with its defaults: Linear-GELU-Linear to
    ``bottleneck_dim``, L2-normalised, then a weight-normalised linear layer without bias whose norms start at 1)."""

    def __init__(self, kind: str, heads: int, d_in: int, k: int, hidden_dim: int = 512,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.layers = nn.ModuleList([BatchedLinear(heads, d_in, k)])
        elif kind == "mlp":
            self.layers = nn.ModuleList([BatchedLinear(heads, d_in, hidden_dim), BatchedLinear(heads, hidden_dim, k)])
        elif kind == "dino":
            self.layers = nn.ModuleList([BatchedLinear(heads, d_in, hidden_dim, init_std=0.02),
                                         BatchedLinear(heads, hidden_dim, bottleneck_dim, init_std=0.02)])
            v = BatchedLinear(heads, bottleneck_dim, k, bias=False).weight.detach()  # (H, bottleneck, K)
            self.last_v = nn.Parameter(v)
            self.last_g = nn.Parameter(torch.ones(heads, 1, k))
        else:
            raise SSLClusterError(f"{KEY}.head={kind!r}: use one of linear, mlp, dino")

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (H, B, K) logits."""
        h: Tensor = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h) if self.kind == "mlp" else nn.functional.gelu(h)
        if self.kind == "dino":
            h = nn.functional.normalize(h, dim=-1)
            w = self.last_g * self.last_v / self.last_v.norm(dim=1, keepdim=True)  # weight norm per output unit
            h = torch.bmm(h, w)
        return h

    def last_layer(self) -> list[nn.Parameter]:
        """The output layer's parameters (TEMI keeps them fixed during the first epoch)."""
        return [self.last_v, self.last_g] if self.kind == "dino" else list(self.layers[-1].parameters())


@dataclass
class LearnedHeads(ClusteringAlgorithm):
    """Clustering heads trained on frozen embeddings and (anchor, neighbour) pairs; see the module docstring.

    Fit on N points: neighbours are mined (cosine, top ``num_neighbors``, self included) on the ``mine_features``
    embeddings of the same points, then ``num_heads`` heads are trained for ``epochs`` epochs of shuffled
    mini-batches of anchors, each paired with one of its neighbours drawn at random (SCAN's
    ``NeighborsDataset``). The head with the lowest loss over every (point, neighbour) pair of the graph is kept
    (:meth:`head_losses`: labels are never read); it labels any point by its most probable cluster.
    """

    k: int = 10
    num_heads: int = 10
    num_neighbors: int = 20
    head: str = "linear"
    hidden_dim: int = 512
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.0
    features: str | None = "backbone"        # what the heads read (null: clustering.features)
    mine_features: str | None = "projection"  # what neighbours are mined on (null: what the heads read)
    device: str = "auto"
    seed: int = 0
    best_head: int | None = field(default=None, init=False)
    selection_losses: list[float] | None = field(default=None, init=False)
    neighbor_agreement: float | None = field(default=None, init=False, repr=False)
    curve: list[dict[str, float]] = field(default_factory=list, init=False, repr=False)
    model: Any = field(default=None, init=False, repr=False)
    fit_fields = ("best_head", "selection_losses", "trained_on")
    assigns_new_points = True
    trains_on_rows = True
    #: the heads' module kinds this algorithm accepts
    head_kinds: ClassVar[tuple[str, ...]] = ("linear", "mlp")
    trained_on: int | None = field(default=None, init=False)

    # -- parameters ------------------------------------------------------------------------------------------
    def check(self) -> None:
        """One-line errors naming the first invalid setting."""
        if self.k is None or isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 2:
            raise SSLClusterError(f"{KEY}.k={self.k!r} must be an integer of at least 2 (clusters of a head)")
        for name in ("num_heads", "num_neighbors", "hidden_dim", "epochs", "batch_size"):
            check_positive(getattr(self, name), name, integer=True)
        check_positive(self.lr, "lr")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or self.weight_decay < 0:
            raise SSLClusterError(f"{KEY}.weight_decay={self.weight_decay!r} must be >= 0")
        check_choice(self.head, "head", self.head_kinds)
        for name in ("features", "mine_features"):
            if getattr(self, name) is not None:
                check_choice(getattr(self, name), name, FEATURES)
        if not (self.device == "auto" or self.device == "cpu" or str(self.device).startswith("cuda")):
            raise SSLClusterError(f"{KEY}.device={self.device!r}: use auto, cpu or cuda[:N]")

    def requested_k(self) -> int | None:
        """Every head has ``k`` clusters."""
        return int(self.k)

    def resolved_train_size(self, n: int) -> int:
        """The heads train on all ``n`` points; more neighbours than ``n - 1`` are refused here, before any work."""
        if isinstance(self.num_neighbors, (int, np.integer)) and self.num_neighbors >= n:
            raise SSLClusterError(f"{KEY}.num_neighbors={self.num_neighbors} is not below the number of points ({n})")
        return n

    def mining_features(self) -> str | None:
        """The features neighbours are mined on, when they differ from what the heads read."""
        return self.mine_features

    def input_features(self) -> str | None:
        """The features the heads read (None: ``clustering.features``)."""
        return self.features

    # -- what subclasses define --------------------------------------------------------------------------------
    def build(self, d_in: int) -> None:
        """Create ``self.model`` (and whatever else training needs) for inputs of ``d_in`` dimensions."""
        raise NotImplementedError

    def train_step(self, anchors: Tensor, neighbors: Tensor, epoch: int, step: int, steps: int) -> dict[str, float]:
        """One optimisation step on (B, D) anchors and (B, D) neighbours; the batch's loss terms (means over
        heads) for the curve."""
        raise NotImplementedError

    def head_losses(self, probs: Tensor, neighbours: np.ndarray) -> Tensor:
        """(H,) the loss each head is chosen by, from its predictions ``probs`` (H, N, K) of every point and the
        neighbour graph (N, k + 1)."""
        raise NotImplementedError

    def predict_module(self) -> nn.Module:
        """The module whose predictions label points (SCAN: the heads; TEMI: the teacher)."""
        return self.model

    # -- fitting -------------------------------------------------------------------------------------------------
    def _seeded(self) -> torch.Generator:
        torch.manual_seed(int(self.seed))
        return torch.Generator().manual_seed(int(self.seed))

    def fit_rows(self, rows: Rows, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 mine: Rows | None = None) -> None:
        """Train on the (N, D) ``rows`` read by mini-batches (``transform``: the preprocessing of a block);
        neighbours mined on ``mine`` (N, D_m), or on the transformed rows when None."""
        self.check()
        transform = transform or (lambda b: np.asarray(b, dtype=np.float32))
        n = int(rows.shape[0])
        check_k(int(self.k), n)
        if self.num_neighbors >= n:
            raise SSLClusterError(f"{KEY}.num_neighbors={self.num_neighbors} is not below the number of points "
                                  f"({n})")
        if mine is not None and int(mine.shape[0]) != n:
            raise SSLClusterError(f"the mining features have {mine.shape[0]} rows, the clustered ones {n}")
        mine_x = (np.concatenate([transform(rows[s:s + BLOCK]) for s in range(0, n, BLOCK)]) if mine is None
                  else np.asarray(mine[0:n], dtype=np.float32))
        nbrs = mine_neighbours(mine_x, int(self.num_neighbors))
        del mine_x
        self.trained_on = n
        device = resolve_device(str(self.device))
        gen = self._seeded()
        d_in = int(transform(rows[0:1]).shape[1])
        self.build(d_in)
        self.model.to(device)
        batch = min(int(self.batch_size), n)
        steps = n // batch  # full batches only (SCAN's and TEMI's loaders drop the last partial batch)
        self.curve = []
        for epoch in range(int(self.epochs)):
            self.model.train()
            order = torch.randperm(n, generator=gen).numpy()
            pick = torch.randint(0, nbrs.shape[1], (n,), generator=gen).numpy()
            sums: dict[str, float] = {}
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                nidx = nbrs[idx, pick[idx]]
                a = torch.from_numpy(transform(rows[idx])).to(device)
                b = torch.from_numpy(transform(rows[nidx])).to(device)
                terms = self.train_step(a, b, epoch, epoch * steps + s, int(self.epochs) * steps)
                for key, v in terms.items():
                    sums[key] = sums.get(key, 0.0) + v
            self.curve.append({"epoch": epoch + 1, **{key: v / max(1, steps) for key, v in sums.items()}})
            if not all(math.isfinite(v) for v in self.curve[-1].values()):
                raise SSLClusterError(f"{type(self).__name__}: the loss became {self.curve[-1]} in epoch {epoch + 1}"
                                      f" (lower {KEY}.lr={self.lr})")
        probs = self._probs(rows, transform, device)
        losses = self.head_losses(probs, nbrs)
        self.selection_losses = [float(v) for v in losses]
        self.best_head = int(torch.argmin(losses))
        agree = (probs[self.best_head].argmax(-1).numpy()[:, None] == probs[self.best_head].argmax(-1).numpy()[nbrs])
        self.neighbor_agreement = float(agree[:, 1:].mean())
        self.curve[-1]["selected_head"] = float(self.best_head)

    @torch.no_grad()
    def _probs(self, rows: Rows, transform: Callable[[np.ndarray], np.ndarray], device: torch.device,
               head: int | None = None) -> Tensor:
        """(H, N, K) predictions of every head for every row (only ``head``'s: (1, N, K)), on the CPU."""
        module = self.predict_module()
        module.eval()
        out = []
        for s in range(0, int(rows.shape[0]), BLOCK):
            logits = self.logits(module, torch.from_numpy(transform(rows[s:s + BLOCK])).to(device))
            if head is not None:
                logits = logits[head:head + 1]
            out.append(torch.softmax(logits, dim=-1).float().cpu())
        return torch.cat(out, dim=1)

    def logits(self, module: nn.Module, x: Tensor) -> Tensor:
        """(H, B, K) logits of ``module`` on (B, D) features (TEMI divides by its temperature)."""
        out: Tensor = module(x)
        return out

    def fit(self, x: np.ndarray) -> None:
        """Train on the points ``x`` (N, D) in memory, neighbours mined on them."""
        self.fit_rows(np.asarray(x, dtype=np.float32))

    def start_assign(self) -> None:
        """Nothing to reset."""

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """The selected head's most probable cluster (B,) int64 of each point of ``block`` (B, D)."""
        if self.model is None or self.best_head is None:
            raise RuntimeError(f"{type(self).__name__}.assign before fit")
        device = next(self.predict_module().parameters()).device
        probs = self._probs(np.asarray(block, dtype=np.float32), lambda b: b, device, head=self.best_head)
        return probs[0].argmax(dim=-1).numpy().astype(np.int64)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Train on ``x`` (N, D) (neighbours mined on ``x``) and label it -> (N,) int64."""
        self.fit(x)
        return self.assign(x)

    def fit_info(self) -> dict[str, Any]:
        """The selected head, each head's selection loss, the points trained on, how often the selected head puts
        a point and its mined neighbours together, and the last epoch's loss terms."""
        info = super().fit_info()
        if self.neighbor_agreement is not None:
            info["neighbor_agreement"] = self.neighbor_agreement
        if self.curve:
            info["final_loss"] = {k: v for k, v in self.curve[-1].items() if k != "epoch"}
        return info

    def training_curve(self) -> list[dict[str, float]]:
        """Per epoch: the mean loss terms over its mini-batches (written to ``curve.csv``)."""
        return list(self.curve)
