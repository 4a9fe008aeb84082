"""Stage 3: cluster an embeddings set -> ``clusters/<key>/{record.json, labels.npy}``.

Reads the embeddings without their labels. The record is written first with ``status: running`` and rewritten
``complete`` only after ``labels.npy`` is on disk, so a killed run never leaves a record claiming success.
Label-free quality (variances, silhouette, ...) is measured here, in one declared space for every clustering: the
L2-normalised embeddings before PCA/UMAP (:func:`~sslcluster.evaluation.metrics.quality_space`), so clusterings
with different preprocessing can be compared. Rows are presented to the algorithm in a seeded random order
(:meth:`~sslcluster.clustering.base.ClusteringAlgorithm.fit_predict_shuffled`): exported rows are sorted by class.

With ``clustering.select_k.method`` set, k is chosen first by a sweep (elbow, silhouette or BIC; see
:mod:`sslcluster.clustering.select_k`): the curves go to ``plots/select_k.png`` and the sweep and the chosen k to
the record. Arrays an algorithm declares through ``artifacts()`` (a SOM's weights and winning nodes) are saved as
``<name>.npy`` beside ``labels.npy``, their names in the record, for the evaluation pictures. The embeddings are
recorded relative to the run when they are the run's own, so a moved run still evaluates.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslcluster.clustering.base import ASSIGN_BLOCK, ClusteringAlgorithm, row_permutation, train_rows
from sslcluster.clustering.checks import precheck
from sslcluster.clustering.kmeans import AUTO_TRAIN_SIZE
from sslcluster.clustering.preprocess import Preprocessor, PreprocessConfig, preprocess
from sslcluster.clustering.select_k import SelectKConfig, check_config, sweep_k
from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import (QUALITY_SPACE, cluster_metrics, internal_metrics, internal_rows,
                                           quality_space)
from sslcluster.evaluation.plots import k_selection_curves, training_curve
from sslcluster.factory import build
from sslcluster.store.embeddings import ARRAY, RowFile, open_streaming, read_manifest
from sslcluster.store.io import read_json, write_csv, write_json, write_npy
from sslcluster.store.rundir import RunDir
from sslcluster.stages.data_defaults import resolve_data_defaults

log = logging.getLogger(__name__)


def algorithm_params(algo: Any) -> dict[str, Any]:
    """The algorithm's parameters (its dataclass fields set from config) for the record."""
    if dataclasses.is_dataclass(algo):
        return {f.name: getattr(algo, f.name) for f in dataclasses.fields(algo) if f.init}
    return {}


def prepare_cluster_dir(run: RunDir, key: str, overwrite: bool) -> Path:
    """An empty ``clusters/<key>/``; a complete clustering of that key is replaced only with ``overwrite``."""
    out = run.cluster_dir(key)
    if out.exists():
        rec = out / "record.json"
        status = read_json(rec).get("status") if rec.exists() else None
        if status == "complete" and not overwrite:
            raise SSLClusterError(f"cluster key {key!r} already exists in {run.path} "
                                  "(pass clustering.overwrite=true to replace it, or choose clustering.key)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def select_k_config(cfg: DictConfig) -> SelectKConfig | None:
    """``clustering.select_k`` as a :class:`SelectKConfig`, or None when absent or its method is null."""
    node = cfg.clustering.get("select_k")
    if node is None or node.get("method") is None:
        return None
    values = OmegaConf.to_container(node, resolve=True)
    unknown = set(values) - {f.name for f in dataclasses.fields(SelectKConfig)}
    if unknown:
        raise SSLClusterError(f"clustering.select_k: unknown keys {sorted(unknown)}")
    return SelectKConfig(**values)


def built_algorithm(cfg: DictConfig) -> ClusteringAlgorithm:
    """``cfg.clustering.algorithm`` built (checked against the points by :func:`check_for_points`)."""
    algo = build(cfg.clustering.algorithm)
    if not isinstance(algo, ClusteringAlgorithm):
        raise SSLClusterError(f"clustering.algorithm._target_={cfg.clustering.algorithm.get('_target_')} is not a "
                              "ClusteringAlgorithm (sslcluster.clustering.base)")
    return algo


def check_for_points(cfg: DictConfig, algo: ClusteringAlgorithm, shape: tuple[int, ...], pre_cfg: PreprocessConfig,
                     sel_cfg: SelectKConfig | None) -> None:
    """The algorithm's parameters, the preprocessing's and the k sweep's checked for the embeddings it is fitted on,
    of ``shape`` (N, D), before any work (and before any folder is made)."""
    n = int(shape[0])
    if sel_cfg is not None:
        check_config(sel_cfg, algo, n)
    pre_cfg.check(n, int(shape[1]))
    if sel_cfg is None:
        precheck(algo, n)
    else:
        algo.check()
    algo.resolved_train_size(n)  # a train_size above n is refused here, before any folder is made
    if algo.reads_files and (pre_cfg.pca_dim or pre_cfg.umap_dim or sel_cfg is not None):
        raise SSLClusterError(f"clustering={cfg.clustering.name} reads the embeddings file on its workers: only "
                              "clustering.preprocess.l2 applies (set pca_dim and umap_dim to null, "
                              "select_k.method to null)")


def _select_k(cfg: DictConfig, algo: ClusteringAlgorithm, x: np.ndarray, sel_cfg: SelectKConfig,
              record: dict[str, Any], out: Path) -> None:
    """Choose k by a sweep on ``x`` (N, D), rows already in a seeded random order; sets ``algo.k``."""
    sweep = sweep_k(algo, x, sel_cfg, seed=cfg.seed, progress=lambda m: log.info("select_k %s", m))
    algo.k = sweep["chosen_k"]  # type: ignore[attr-defined]  # choosable_k: it has k
    record["select_k"] = sweep
    k_selection_curves(sweep, out / "plots" / "select_k.png")
    log.info("select_k: %s chose k=%d", sweep["method"], sweep["chosen_k"])


@dataclasses.dataclass
class Fitted:
    """What :func:`cluster_rows` returns: labels (N,) int64 (-1 noise), the clustered dimension, the times
    (``time.perf_counter``) preprocessing and k selection ended, and how many rows a streaming algorithm was fitted
    on (None for the others)."""

    labels: np.ndarray
    dim: int
    t_preprocessed: float
    t_selected: float
    train_rows: int | None = None


def cluster_rows(cfg: DictConfig, array: RowFile | np.ndarray, algo: ClusteringAlgorithm, pre_cfg: PreprocessConfig,
                 select: Callable[[np.ndarray], None] | None = None,
                 fit_array: RowFile | np.ndarray | None = None) -> Fitted:
    """Cluster the rows of ``array`` (N, D), a file read block by block or an array in memory, the one way the
    cluster stage and the validation figures (``val_nmi``, :func:`sslcluster.stages.evaluate.validation_metrics`)
    both do, so that settings tuned on validation are those of the clustering they are used for.

    A streaming algorithm (``algo.streams``), or any algorithm fitted on another split (``fit_array``:
    ``clustering.fit_split``): the preprocessing and the algorithm are fitted on a seeded sample of ``train_size``
    rows (random order) of ``fit_array`` (default ``array`` itself), then every row of ``array`` is preprocessed and
    assigned block by block; rows of ``array`` that were in the sample take the coordinates they were fitted on
    (:class:`Preprocessor`). Memory: the sample, one block, and the labels. The others: every row preprocessed at
    once and clustered in a seeded random order (:meth:`ClusteringAlgorithm.fit_predict_shuffled`). ``select``,
    where given, runs k selection on the preprocessed rows (a seeded random order) before the fit."""
    n = int(array.shape[0])
    if not algo.streams and fit_array is None:
        x = preprocess(array[:], pre_cfg)
        t1 = time.perf_counter()
        if select is not None:
            select(x[row_permutation(len(x), cfg.seed)])
        t_sel = time.perf_counter()
        labels = algo.fit_predict_shuffled(x, seed=cfg.seed)
        return Fitted(labels, int(x.shape[1]), t1, t_sel)
    source = array if fit_array is None else fit_array
    n_fit = int(source.shape[0])
    rows = train_rows(n_fit, algo.resolved_train_size(n_fit), cfg.seed)
    sample = np.asarray(source[rows], dtype=np.float32)  # RowFile reads in file order, returns the rows' random order
    bad = ~np.isfinite(sample).all(axis=1)
    if bad.any():  # named by their rows in the file (the sample's own order is random)
        first = np.sort(rows[bad])
        raise SSLClusterError(f"{len(first)} embedding rows contain NaN or inf (first rows: {first[:5].tolist()}); "
                              "refusing to cluster them")
    pre = Preprocessor(pre_cfg)
    # the fitted rows' own coordinates are reused only where they are rows of the assigned set
    xs = pre.fit_transform(sample, rows=rows if fit_array is None else None)
    del sample
    t1 = time.perf_counter()
    if select is not None:
        select(xs)
    t_sel = time.perf_counter()
    algo.fit(xs)
    dim = int(xs.shape[1])
    del xs
    algo.start_assign()
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, ASSIGN_BLOCK):
        block = np.asarray(array[s:s + ASSIGN_BLOCK], dtype=np.float32)
        labels[s:s + ASSIGN_BLOCK] = algo.assign(pre.transform(block, offset=s), checked=True)
    return Fitted(labels, dim, t1, t_sel, int(len(rows)))


def sibling_embeddings(embeddings: Path, split: str, features: str, key: str, required: bool = True) -> Path | None:
    """The embeddings set beside ``embeddings`` (same representation) of ``split`` with ``features``
    (``<prefix><split>`` or ``<prefix><split>_<features>``, checked against its manifest). Missing: a one-line error
    naming ``key`` and the folders looked for, or None when not ``required``."""
    manifest = read_manifest(embeddings)
    cur_split, cur_features = manifest.get("split"), manifest.get("features")
    if manifest.get("split") == split and cur_features == features:
        return embeddings
    name = embeddings.name
    prefix = None
    for tail in (f"{cur_split}_{cur_features}", str(cur_split)):
        if cur_split is not None and name.endswith(tail):
            prefix = name[:-len(tail)]
            break
    if prefix is None:
        raise SSLClusterError(f"{key}: cannot tell the split of {embeddings} (its manifest names split "
                              f"{cur_split!r}); give the run's own embeddings")
    candidates = [f"{prefix}{split}_{features}", f"{prefix}{split}"]
    for c in candidates:
        folder = embeddings.parent / c
        if (folder / "manifest.json").is_file():
            m = read_manifest(folder)
            if m.get("split") == split and m.get("features") == features:
                return folder
    if not required:
        return None
    raise SSLClusterError(f"{key}: no {split} embeddings of {features} features beside {embeddings} (looked for "
                          f"{', '.join(candidates)}): export them (sslcluster export export.splits=[{split}] "
                          f"export.features={features})")


def _inputs(cfg: DictConfig, algo: ClusteringAlgorithm, embeddings: Path) -> tuple[Path, Path | None, Path | None]:
    """What the algorithm reads: the embeddings it assigns (``embeddings``, or their sibling of the features the
    algorithm reads, ``input_features``), those it is fitted on (``clustering.fit_split``: None for the same) and
    those it mines neighbours on (``mining_features``: None for the fitted ones). A model without a projection head
    (pixels, a pretrained backbone used as it is: no checkpoint) reads and mines its only features."""
    manifest = read_manifest(embeddings)
    trained = manifest.get("checkpoint") is not None and manifest.get("features") in ("backbone", "projection")
    read = embeddings
    want = algo.input_features()
    if want is not None and trained and manifest.get("features") != want:
        read = sibling_embeddings(embeddings, str(manifest.get("split")), want,
                                  f"clustering.algorithm.features={want}") or embeddings
    fit = None
    fit_split = cfg.clustering.get("fit_split")
    if fit_split is not None and fit_split != manifest.get("split"):
        if not algo.assigns_new_points:
            raise SSLClusterError(f"clustering.fit_split={fit_split}: clustering={cfg.clustering.name} cannot assign "
                                  "points it was not fitted on; use one that can (kmeans, gmm, som, scan, temi) or "
                                  "clustering.fit_split=null")
        read_manifest_ = read_manifest(read)
        fit = sibling_embeddings(read, str(fit_split), str(read_manifest_.get("features")),
                                 f"clustering.fit_split={fit_split}")
    mine = None
    mf = algo.mining_features()
    if mf is not None and algo.trains_on_rows and trained:
        base = fit or read
        if read_manifest(base).get("features") != mf:
            mine = sibling_embeddings(base, str(read_manifest(base).get("split")), mf,
                                      f"clustering.algorithm.mine_features={mf}")
    return read, fit, mine


def _cluster_rows(algo: ClusteringAlgorithm, array: RowFile, fit_array: RowFile, mine: RowFile | None,
                  pre_cfg: PreprocessConfig, seed: int) -> tuple[np.ndarray, int, float]:
    """A row-training algorithm (the learned heads): fitted by mini-batches read from ``fit_array`` (N_f, D),
    neighbours mined on ``mine`` (N_f, D_m) when given; then every row of ``array`` (N, D) assigned block by
    block. A PCA or UMAP of the preprocessing is fitted on a seeded sample of the fitted rows first. Returns
    labels (N,), the dimension the algorithm read and the time its fit began."""
    pre = Preprocessor(pre_cfg)
    if pre_cfg.pca_dim or pre_cfg.umap_dim:
        n_fit = int(fit_array.shape[0])
        pre.fit_transform(np.asarray(fit_array[train_rows(n_fit, min(n_fit, AUTO_TRAIN_SIZE), seed)]))
    t_fit = time.perf_counter()
    algo.fit_rows(fit_array, pre.transform, mine)
    n = int(array.shape[0])
    algo.start_assign()
    labels = np.empty(n, dtype=np.int64)
    dim = 0
    for s in range(0, n, ASSIGN_BLOCK):
        block = pre.transform(array[s:s + ASSIGN_BLOCK], offset=s)
        dim = int(block.shape[1])
        labels[s:s + ASSIGN_BLOCK] = algo.assign(block, checked=True)
    return labels, dim, t_fit


def write_curve(out: Path, curve: list[dict[str, float]]) -> None:
    """``curve.csv``: one row per epoch, a column per loss term (empty where an epoch has no such term)."""
    columns = list(dict.fromkeys(k for row in curve for k in row))
    write_csv(out / CURVE, columns, [[row.get(c, "") for c in columns] for row in curve])


#: the training curve of a trained clustering (the learned heads), in its folder
CURVE = "curve.csv"


@dataclasses.dataclass
class ClusterInputs:
    """The embeddings a clustering reads, opened for streaming (never held whole in memory)."""

    embeddings: Path
    manifest: dict[str, Any]
    array: Any                      # (N, D) memory-mapped rows to assign
    ids_sha256: str
    fit_emb: Path | None = None     # clustering.fit_split's embeddings, where set
    fit_array: Any = None
    fit_ids: str | None = None
    mine_emb: Path | None = None    # the features neighbours are mined on (learned heads)
    mine_array: Any = None


def open_inputs(cfg: DictConfig, algo: ClusteringAlgorithm, embeddings: Path, pre_cfg: PreprocessConfig,
                sel_cfg: SelectKConfig | None) -> ClusterInputs:
    """Open the clustered split, the fitted split and the mining features, and check them against the algorithm
    (k, neighbours against the fitted points; equal widths; no k sweep for trained heads), before anything is
    written."""
    embeddings, fit_emb, mine_emb = _inputs(cfg, algo, embeddings)
    manifest, array, ids_sha256 = open_streaming(embeddings)
    inp = ClusterInputs(embeddings, manifest, array, ids_sha256, fit_emb=fit_emb, mine_emb=mine_emb)
    if fit_emb is not None:
        _, inp.fit_array, inp.fit_ids = open_streaming(fit_emb)
        check_for_points(cfg, algo, inp.fit_array.shape, pre_cfg, sel_cfg)
        if inp.fit_array.shape[1] != array.shape[1]:
            raise SSLClusterError(f"clustering.fit_split={cfg.clustering.fit_split}: {fit_emb} has "
                                  f"{inp.fit_array.shape[1]} dimensions, {embeddings} {array.shape[1]}")
    else:
        check_for_points(cfg, algo, array.shape, pre_cfg, sel_cfg)
    if mine_emb is not None:
        inp.mine_array = open_streaming(mine_emb)[1]
    if algo.trains_on_rows and sel_cfg is not None:
        raise SSLClusterError(f"clustering.select_k.method={sel_cfg.method}: clustering={cfg.clustering.name} trains "
                              "its heads for a given k; set clustering.select_k.method=null")
    return inp


def start_record(cfg: DictConfig, run: RunDir, key: str, algo: ClusteringAlgorithm, pre_cfg: PreprocessConfig,
                 inp: ClusterInputs, representation: str, primary: bool) -> dict[str, Any]:
    """``record.json``'s fields known before the fit (status ``running``)."""
    record: dict[str, Any] = {
        "key": key,
        "algorithm": cfg.clustering.name,
        "params": algorithm_params(algo),
        "preprocess": pre_cfg.describe(),
        "config": OmegaConf.to_container(cfg.clustering, resolve=True),
        "embeddings": run.store_path(inp.embeddings),
        "features": inp.manifest.get("features"),
        "representation": representation,
        "primary": primary,
        "ids_sha256": inp.ids_sha256,
        "n_points": int(inp.array.shape[0]),
        "seed": cfg.seed,
        "fit_split": cfg.clustering.get("fit_split"),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if inp.fit_emb is not None:
        record.update({"fit_embeddings": run.store_path(inp.fit_emb), "fit_ids_sha256": inp.fit_ids,
                       "fit_n_points": int(inp.fit_array.shape[0])})
    if inp.mine_emb is not None:
        record["mine_embeddings"] = run.store_path(inp.mine_emb)
    return record


def fit_labels(cfg: DictConfig, algo: ClusteringAlgorithm, inp: ClusterInputs, pre_cfg: PreprocessConfig,
               sel_cfg: SelectKConfig | None, record: dict[str, Any], out: Path
               ) -> tuple[np.ndarray, int, float, float]:
    """Fit the algorithm and label every row: (labels (N,), clustered width, time preprocessing ended, time k
    selection ended). Trained heads write their curve into ``out``; a distributed engine reads the file itself."""
    array, fit_array = inp.array, inp.fit_array
    if algo.trains_on_rows:
        labels, dim, t1 = _cluster_rows(algo, array, fit_array if fit_array is not None else array, inp.mine_array,
                                        pre_cfg, int(cfg.seed))
        curve = algo.training_curve()
        if curve:
            write_curve(out, curve)
            training_curve(curve, out / "plots" / "training_curve.png",
                           title=f"{cfg.clustering.name}: the heads' mean loss per epoch")
        return labels, dim, t1, t1
    if algo.reads_files and fit_array is None:  # a distributed engine: its workers read the file in blocks
        t1 = time.perf_counter()
        labels = algo.fit_predict_file(inp.embeddings / ARRAY, int(array.shape[0]), int(array.shape[1]),
                                       l2=pre_cfg.l2)
        return labels, int(array.shape[1]), t1, t1
    select = None if sel_cfg is None else (lambda x: _select_k(cfg, algo, x, sel_cfg, record, out))
    fitted = cluster_rows(cfg, array, algo, pre_cfg, select, fit_array=fit_array)
    if fitted.train_rows is not None:
        record["train_rows"] = fitted.train_rows
    return fitted.labels, fitted.dim, fitted.t_preprocessed, fitted.t_selected


def cluster(cfg: DictConfig, run: RunDir, embeddings: Path, key: str, overwrite: bool = False,
            representation: str = "learned", primary: bool = False) -> Path:
    """Cluster the embeddings set ``embeddings`` with ``cfg.clustering`` into ``clusters/<key>/``; its path.

    ``representation`` (``learned``, ``pixels``) and ``primary`` (the run's own clustering of that representation,
    which its ``metrics.json`` summarises) are recorded in ``record.json``. With ``clustering.fit_split`` the
    algorithm is fitted on that split's embeddings (the same features, beside ``embeddings``) and assigns these;
    an algorithm that reads other features (``input_features``: SCAN's heads read backbone features) reads their
    sibling of the same split, and one that mines neighbours (``mining_features``) mines on the fitted split's
    embeddings of those features."""
    resolve_data_defaults(cfg)  # data.num_classes=auto (no-op where the pipeline already decided it)
    pre_cfg = PreprocessConfig(**OmegaConf.to_container(cfg.clustering.preprocess, resolve=True), seed=cfg.seed)
    sel_cfg = select_k_config(cfg)
    algo = built_algorithm(cfg)
    algo.check()
    inp = open_inputs(cfg, algo, embeddings, pre_cfg, sel_cfg)
    out = prepare_cluster_dir(run, key, overwrite)
    record = start_record(cfg, run, key, algo, pre_cfg, inp, representation, primary)
    write_json(out / "record.json", record)
    n = int(inp.array.shape[0])
    try:
        t0 = time.perf_counter()
        labels, dim, t1, t_sel = fit_labels(cfg, algo, inp, pre_cfg, sel_cfg, record, out)
        t2 = time.perf_counter()
        if labels.shape != (n,):
            raise SSLClusterError(f"{cfg.clustering.name} returned {labels.shape} labels for {n} points")
        quality = cluster_metrics(None, labels, None)
        if quality["n_clusters"] == 0:
            raise SSLClusterError(f"{cfg.clustering.name} labelled every point as noise; nothing was clustered "
                                  "(try other parameters)")
        rows = internal_rows(labels)  # a fixed sample: only those rows of the embeddings are read
        quality.update(internal_metrics(quality_space(inp.array[rows]), labels[rows]))
        t3 = time.perf_counter()
        artifacts = algo.artifacts()
        for name, arr in artifacts.items():
            write_npy(out / f"{name}.npy", arr)
        write_npy(out / "labels.npy", labels)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    record.update({
        "params": algorithm_params(algo),
        "backend": algo.resolved_backend(n),
        "clustered_dim": dim,
        "quality_space": QUALITY_SPACE,
        "row_order": f"seeded permutation (seed {cfg.seed})",
        "fit_info": algo.fit_info(),
        "artifacts": sorted(artifacts),
        "curve": CURVE if (out / CURVE).is_file() else None,
        "quality": quality,
        "times_s": {"preprocess": t1 - t0, "select_k": t_sel - t1, "fit": t2 - t_sel, "quality": t3 - t2},
        "status": "complete",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    write_json(out / "record.json", record)
    log.info("clustered %d points into %d clusters (%s) in %.2fs", n, quality["n_clusters"],
             cfg.clustering.name, t2 - t_sel)
    return out
