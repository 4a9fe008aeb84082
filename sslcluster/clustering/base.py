"""The interface every clustering algorithm implements, and what the cluster stage and evaluation ask of it.

An algorithm is a dataclass whose fields are its parameters (instantiated from ``configs/clustering/<name>.yaml``).
It fits on points and returns labels; everything else it produces is declared here, with a default, so the stages
never probe for optional attributes.

The seeded order in which rows reach an algorithm is decided here too (:func:`row_permutation`,
:func:`train_rows`, :meth:`ClusteringAlgorithm.fit_predict_shuffled`); an algorithm that keeps per-point state of a
fit puts it back in the original order in :meth:`ClusteringAlgorithm.restore_row_order` (the SOM's winning nodes).
This module imports no algorithm: every algorithm module imports it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

#: rows per block when points are assigned after a fit (``assign``; memory: one block of float32 plus its distances).
ASSIGN_BLOCK = 65_536


def row_permutation(n: int, seed: int) -> np.ndarray:
    """The seeded order (N,) in which :meth:`ClusteringAlgorithm.fit_predict_shuffled` presents ``n`` rows."""
    return np.random.default_rng(seed).permutation(n)


def train_rows(n: int, train_size: int, seed: int) -> np.ndarray:
    """Positions (train_size,) of a seeded sample of ``n`` rows, in random order (exported rows are sorted by class
    and k-means++ seeding picks rows by position); all ``n`` rows, permuted, when ``train_size >= n``."""
    rng = np.random.default_rng(seed)
    if train_size >= n:
        return rng.permutation(n)
    return rng.choice(n, train_size, replace=False)


class Rows(Protocol):
    """An (N, D) array read by rows: a numpy array, or the run's memory-mapped embeddings
    (:class:`sslcluster.store.embeddings.RowFile`). ``rows[start:end]`` reads a block, ``rows[idx]`` (an int array)
    gathers rows in the order asked; only the rows asked for are read."""

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, D)."""

    def __len__(self) -> int: ...

    def __getitem__(self, item: Any) -> np.ndarray: ...


class ClusteringAlgorithm:
    """Base class of the clustering algorithms: ``fit_predict(x: (N, D) float32) -> labels (N,) int64``.

    Noise (where an algorithm has it) is labelled -1. An algorithm whose number of clusters is a parameter names
    it ``k`` (a dataclass field); k selection (:mod:`sslcluster.clustering.select_k`) sets it.
    """

    #: whether a fit leaves the Bayesian information criterion in ``self.bic`` (k selection by BIC needs it).
    provides_bic: ClassVar[bool] = False
    #: names of fit results (dataclass fields set by ``fit_predict``) recorded in ``record.json``'s ``fit_info``.
    fit_fields: ClassVar[tuple[str, ...]] = ()
    #: whether the algorithm trains on a sample and assigns points block by block (``resolved_train_size``,
    #: ``fit``, ``start_assign``, ``assign``), so the cluster stage can stream embeddings that do not fit in memory.
    streams: ClassVar[bool] = False
    #: whether the algorithm reads the embeddings file itself (``fit_predict_file``: a distributed engine whose
    #: workers read blocks of it); the cluster stage then hands it the file instead of an array.
    reads_files: ClassVar[bool] = False
    #: whether the algorithm labels points it was not fitted on (``fit``, then ``start_assign`` and ``assign``), so
    #: ``clustering.fit_split`` can fit it on one split and assign another. Streaming algorithms do.
    assigns_new_points: ClassVar[bool] = False
    #: whether the algorithm trains by mini-batches over rows it reads itself (``fit_rows``: the learned heads),
    #: so the cluster stage hands it the memory-mapped embeddings instead of a copy, then assigns with ``assign``.
    trains_on_rows: ClassVar[bool] = False

    def check(self) -> None:
        """Validate the parameters before any work (preprocessing can take minutes); one-line errors."""

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster ``x`` (N, D) float32 -> labels (N,) int64, -1 for noise."""
        raise NotImplementedError

    def fit_predict_shuffled(self, x: np.ndarray, seed: int) -> np.ndarray:
        """:meth:`fit_predict` on the rows of ``x`` (N, D) in a seeded random order (:func:`row_permutation`),
        labels (N,) mapped back to the original rows. Exported rows follow the folder order, i.e. they are sorted by
        class; BIRCH (its CF tree is built point by point), DBSCAN (a border point joins the first core point's
        cluster that reaches it), mini-batch k-means (batches in row order) and the SOM (online updates) depend on
        that order, and k-means++ seeding picks rows by position. Per-point state the algorithm keeps is mapped
        back by :meth:`restore_row_order`."""
        perm = row_permutation(len(x), seed)
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        labels = np.asarray(self.fit_predict(x[perm]), dtype=np.int64)
        if labels.shape != (len(x),):
            return labels  # the caller reports the wrong shape
        self.restore_row_order(inverse)
        return labels[inverse]

    def restore_row_order(self, inverse: np.ndarray) -> None:
        """After :meth:`fit_predict` on shuffled rows, put per-point state of the fit (arrays of one entry per
        point) back in the original row order: ``state[inverse]``, ``inverse`` (N,) int64. Nothing by default: an
        algorithm that keeps such state (the SOM's best-matching units) overrides this."""

    def requested_k(self) -> int | None:
        """The number of clusters asked for (checked against the number of points), None when the algorithm
        finds the number itself."""
        return self.k if self.choosable_k() is None else None  # type: ignore[attr-defined]

    def choosable_k(self) -> str | None:
        """None when k selection may set ``k``; otherwise why not (a sentence for the error message)."""
        if dataclasses.is_dataclass(self) and "k" in {f.name for f in dataclasses.fields(self)}:
            return None
        return f"algorithm {type(self).__name__} has no k to choose (it finds the number of clusters itself)"

    def resolved_train_size(self, n: int) -> int:
        """How many of ``n`` points a streaming algorithm trains on (all ``n`` for the others)."""
        return n

    def fit(self, x: np.ndarray) -> None:
        """Streaming algorithms: train on a sample ``x`` (T, D) float32."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def start_assign(self) -> None:
        """Streaming algorithms: begin a pass of :meth:`assign` over every block."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def assign(self, block: np.ndarray, checked: bool = False) -> np.ndarray:
        """Streaming algorithms: labels (B,) int64 of a block of points (B, D) after :meth:`fit`. ``checked``: the
        block is already float32 with every value finite (a :class:`~sslcluster.clustering.preprocess.Preprocessor`
        output), so the algorithm need not check it again."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def fit_predict_file(self, path: Path, n: int, dim: int, l2: bool) -> np.ndarray:
        """File-reading algorithms: cluster the rows of the (N, D) ``.npy`` file at ``path`` (L2-normalised when
        ``l2``) -> labels (N,) int64."""
        raise NotImplementedError(f"{type(self).__name__} does not read files")

    def mining_features(self) -> str | None:
        """Features (``projection``, ``backbone``) whose embeddings of the fitted split :meth:`fit_rows` mines
        neighbours on; None: it mines on the points it reads."""
        return None

    def input_features(self) -> str | None:
        """Features (``backbone``, ``projection``) the algorithm reads whatever ``clustering.features`` says (the
        learned heads: SCAN's heads read backbone features); None: ``clustering.features``."""
        return None

    def training_curve(self) -> list[dict[str, float]]:
        """Per epoch of a trained algorithm, its loss terms (the cluster stage writes them to ``curve.csv``)."""
        return []

    def fit_rows(self, rows: Rows, transform: Any, mine: Rows | None = None) -> None:
        """Row-training algorithms: fit on the (N, D) ``rows``, each mini-batch passed through ``transform`` (the
        preprocessing: (B, D) -> (B, D') float32) before use; ``mine`` (N, D_m): the embeddings of the same points
        that neighbours are mined on (None: the transformed rows themselves)."""
        raise NotImplementedError(f"{type(self).__name__} does not train on rows")

    def resolved_backend(self, n: int) -> str | None:
        """The library that fits ``n`` points (for algorithms with a ``backend`` choice), else None."""
        return None

    def fit_info(self) -> dict[str, Any]:
        """Numbers about the last fit for ``record.json`` (inertia, BIC, iterations, quantization error, ...)."""
        return {name: getattr(self, name) for name in self.fit_fields if getattr(self, name) is not None}

    def artifacts(self) -> dict[str, np.ndarray]:
        """Arrays of the last fit saved beside ``labels.npy`` as ``<name>.npy`` (e.g. a SOM's node weights);
        their names are recorded in ``record.json`` and evaluation reads them back through
        :meth:`sslcluster.store.clusters.Clustering.artifacts`."""
        return {}
