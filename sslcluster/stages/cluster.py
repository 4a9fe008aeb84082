"""Stage 3: cluster an embeddings set -> ``clusters/<key>/{record.json, labels.npy}``.

Reads the embeddings without their labels. The record is written first with ``status: running`` and rewritten
``complete`` only after ``labels.npy`` is on disk, so a killed run never leaves a record claiming success.
Label-free quality (variances, silhouette, ...) is measured here, in one declared space for every clustering: the
L2-normalised embeddings before PCA/UMAP (:func:`~sslcluster.evaluation.metrics.quality_space`), so clusterings
with different preprocessing can be compared. Rows are presented to the algorithm in a seeded random order
(:func:`~sslcluster.clustering.algorithms.fit_predict_shuffled`): exported rows are sorted by class.

With ``clustering.select_k.method`` set, k is chosen first by a sweep (elbow, silhouette or BIC; see
:mod:`sslcluster.clustering.select_k`): the curves go to ``plots/select_k.png`` and the sweep and the chosen k to
the record. Arrays an algorithm exposes through ``artifacts()`` (a SOM's weights and winning nodes) are saved as
``<name>.npy`` beside ``labels.npy`` for the evaluation pictures.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslcluster.clustering.algorithms import fit_predict_shuffled, precheck, row_permutation
from sslcluster.clustering.preprocess import PreprocessConfig, preprocess
from sslcluster.clustering.select_k import SelectKConfig, check_config, sweep_k
from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.metrics import QUALITY_SPACE, cluster_metrics, quality_space
from sslcluster.stages.common import build
from sslcluster.tracking.embeddings import read_embeddings
from sslcluster.tracking.io import read_json, write_json, write_npy
from sslcluster.tracking.rundir import RunDir

log = logging.getLogger(__name__)


def algorithm_params(algo: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(algo):
        return {f.name: getattr(algo, f.name) for f in dataclasses.fields(algo) if f.init}
    return {}


def prepare_cluster_dir(run: RunDir, key: str, overwrite: bool) -> Path:
    out = run.cluster_dir(key)
    if out.exists():
        rec = out / "record.json"
        status = read_json(rec).get("status") if rec.exists() else None
        if status == "complete" and not overwrite:
            raise SSLClusterError(f"cluster key {key!r} already exists in {run.path} "
                                  "(pass cluster.overwrite=true to replace it, or choose cluster.key)")
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


def cluster(cfg: DictConfig, run: RunDir, embeddings: Path, key: str, overwrite: bool = False) -> Path:
    es = read_embeddings(embeddings, with_labels=False)
    pre_cfg = PreprocessConfig(**OmegaConf.to_container(cfg.clustering.preprocess, resolve=True), seed=cfg.seed)
    algo = build(cfg.clustering.algorithm)
    sel_cfg = select_k_config(cfg)
    if sel_cfg is not None:
        check_config(sel_cfg, algo, int(es.array.shape[0]))  # before any folder is made
    n = int(es.array.shape[0])
    pre_cfg.check(n, int(es.array.shape[1]))
    if sel_cfg is None:
        precheck(algo, n)
    elif hasattr(algo, "check"):
        algo.check()
    out = prepare_cluster_dir(run, key, overwrite)
    record: dict[str, Any] = {
        "key": key,
        "algorithm": cfg.clustering.name,
        "params": algorithm_params(algo),
        "preprocess": pre_cfg.describe(),
        "config": OmegaConf.to_container(cfg.clustering, resolve=True),
        "embeddings": str(Path(embeddings).resolve()),
        "features": es.manifest.get("features"),
        "ids_sha256": es.index.ids_sha256(),
        "n_points": int(es.array.shape[0]),
        "seed": cfg.seed,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "record.json", record)
    try:
        t0 = time.perf_counter()
        x = preprocess(np.asarray(es.array), pre_cfg)
        t1 = time.perf_counter()
        if sel_cfg is not None:
            sweep = sweep_k(algo, x[row_permutation(len(x), cfg.seed)], sel_cfg, seed=cfg.seed, progress=lambda m: log.info("select_k %s", m))
            algo.k = sweep["chosen_k"]
            record["select_k"] = sweep
            from sslcluster.evaluation.plots import k_selection_curves

            k_selection_curves(sweep, out / "plots" / "select_k.png")
            log.info("select_k: %s chose k=%d", sweep["method"], sweep["chosen_k"])
        t_sel = time.perf_counter()
        labels = fit_predict_shuffled(algo, x, seed=cfg.seed)
        t2 = time.perf_counter()
        if labels.shape != (x.shape[0],):
            raise SSLClusterError(f"{cfg.clustering.name} returned {labels.shape} labels for {x.shape[0]} points")
        quality = cluster_metrics(quality_space(es.array), labels, None)
        if quality["n_clusters"] == 0:
            raise SSLClusterError(f"{cfg.clustering.name} labelled every point as noise; nothing was clustered "
                                  "(try other parameters)")
        t3 = time.perf_counter()
        for name, arr in (algo.artifacts() if hasattr(algo, "artifacts") else {}).items():
            write_npy(out / f"{name}.npy", arr)
        write_npy(out / "labels.npy", labels)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    extra = {k: getattr(algo, k) for k in ("inertia", "bic", "n_iter") if getattr(algo, k, None) is not None}
    if hasattr(algo, "summary"):
        extra.update(algo.summary())
    record.update({
        "params": algorithm_params(algo),
        "backend": getattr(algo, "resolved_backend", lambda n: None)(x.shape[0]),
        "clustered_dim": int(x.shape[1]),
        "quality_space": QUALITY_SPACE,
        "row_order": f"seeded permutation (seed {cfg.seed})",
        "fit_info": extra,
        "quality": quality,
        "times_s": {"preprocess": t1 - t0, "select_k": t_sel - t1, "fit": t2 - t_sel, "quality": t3 - t2},
        "status": "complete",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    write_json(out / "record.json", record)
    log.info("clustered %d points into %d clusters (%s) in %.2fs", x.shape[0], quality["n_clusters"],
             cfg.clustering.name, t2 - t_sel)
    return out
