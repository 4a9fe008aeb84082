"""The stages wired together. ``run_pipeline`` is the main job (``python train.py``); the ``stage_*`` functions
run one stage, on a new run directory or on an existing one (``run.key=...``). The work is the stages' (under
:mod:`sslcluster.stages`; the representations a run compares: :mod:`sslcluster.stages.representations`)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from sslcluster.config import to_yaml
from sslcluster.distributed import RUN_KEY_ENV, is_global_rank_zero
from sslcluster.errors import SSLClusterError
from sslcluster.stages.cluster import cluster
from sslcluster.stages.evaluate import (evaluate_clustering, evaluate_representation, redraw_plots,
                                        validation_metrics)
from sslcluster.stages.common import StageTimer, check_data_config, cluster_key
from sslcluster.stages.data_defaults import resolve_data_defaults
from sslcluster.stages.pixels_umap import clustering_config as pixels_umap_clustering
from sslcluster.stages.export import export_split
from sslcluster.stages.pretrain import pretrain
from sslcluster.stages.report import report, write_report
from sslcluster.stages.representations import (REPRESENTATIONS, Representation, baseline_representations,
                                               clustering_exports, export_representations, frozen_learned,
                                               representation_of)
from sslcluster.stages.scan import check_scan_config, scan_stage
from sslcluster.store.embeddings import Embeddings, read_embeddings, read_manifest
from sslcluster.store.io import read_json, write_text
from sslcluster.store.representations import LEARNED, PIXELS_UMAP, metric_prefix
from sslcluster.store.rundir import RunDir
from sslcluster.tracking.wandb_log import tracking_session

log = logging.getLogger(__name__)


def _existing_file(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise SSLClusterError(f"{what} not found: {p}")
    return p


@contextmanager
def open_run(cfg: DictConfig, stage: str, reuse: bool = True, must_exist: bool = False) -> Iterator[RunDir]:
    """A new run directory (``run.key`` unset or new), or, where ``reuse`` is allowed, the existing ``run.key``.
    A new one is removed again if the stage fails before it wrote a checkpoint, so no half-made run is left."""
    root = Path(cfg.run.root)
    if not is_global_rank_zero():  # a DDP process other than rank 0: rank 0's run directory, written by rank 0
        key = cfg.run.key or os.environ.get(RUN_KEY_ENV)
        if key is None:
            raise SSLClusterError("a multi-process launch (torchrun, srun) needs run.key=NAME so that every "
                                  "process uses the same run directory")
        yield RunDir(root / key)
        return
    # new runs (run, pretrain) refuse an existing key, unless resuming it
    reuse = reuse or bool(cfg.get("resume"))
    existing = (reuse and cfg.run.key is not None and (root / cfg.run.key).is_dir()
                and not cfg.run.overwrite)
    if must_exist and not existing:
        raise SSLClusterError(f"stage {stage!r} needs an existing run: set run.key (no run {cfg.run.key!r} "
                              f"in {root})")
    if existing:
        run = RunDir.open(root, cfg.run.key)
        write_text(run.path / "stage_configs" / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}.yaml", to_yaml(cfg))
        yield run
        return
    run = RunDir.create(root, cfg.run.key, tag=str(cfg.run.tag), overwrite=cfg.run.overwrite)
    try:
        run.write_config(to_yaml(cfg))
        yield run
    except BaseException:
        if not (run.checkpoints_dir / "last.ckpt").exists():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def clustered_embeddings_name(cfg: DictConfig) -> str:
    """``embeddings/<name>`` holding the features the cluster stage uses by default."""
    split = cfg.clustering.split
    return split if cfg.clustering.features == cfg.export.features else f"{split}_{cfg.clustering.features}"


def score_representation(cfg: DictConfig, run: RunDir, rep: Representation, timed: StageTimer) -> dict[str, Any]:
    """Cluster (name) and evaluate one representation; its metrics under its prefix."""
    metrics: dict[str, Any] = {}
    stage = "cluster" if rep.name == LEARNED else "baseline"
    if rep.clustered is not None and cfg.stages.cluster:
        with timed(stage):
            cdir = cluster(pixels_umap_clustering(cfg) if rep.name == PIXELS_UMAP else cfg, run, rep.clustered,
                           rep.cluster_key(cfg), overwrite=cfg.run.overwrite, representation=rep.name, primary=True)
        if rep.named:  # before evaluation, so the pictures carry the names
            from sslcluster.stages.naming import name_in_pipeline  # the naming client is imported only when used

            with timed("naming"):
                name_in_pipeline(cfg, cdir)  # optional: warns (never fails the run) without a key
        if cfg.stages.evaluate:
            with timed("evaluate" if rep.name == "learned" else stage):
                metrics.update(evaluate_clustering(cfg, cdir))
    if cfg.stages.evaluate and "train" in rep.splits and "test" in rep.splits:
        with timed("evaluate" if rep.name == "learned" else stage):
            metrics.update(evaluate_representation(cfg, rep.splits["train"], rep.splits["test"]))
    return {rep.metric_prefix + k: v for k, v in metrics.items()}


#: metrics of the SCAN stage's clusterings copied into the run's metrics.json, after the key's first part
SCAN_SUMMARY = ("nmi", "ari", "acc", "purity")


def score_scan(cfg: DictConfig, scanned: list[Path], timed: StageTimer) -> dict[str, Any]:
    """Name (when naming is on) and evaluate the SCAN stage's clusterings; their NMI, ARI, ACC (and purity) as
    ``scan_backbone_nmi``, ``scan_selflabel_nmi``, ... for the run's summary."""
    metrics: dict[str, Any] = {}
    for cdir in scanned:
        if cfg.get("naming") is not None and cfg.naming.enabled:
            from sslcluster.stages.naming import name_in_pipeline

            with timed("naming"):
                name_in_pipeline(cfg, cdir)
        if cfg.stages.evaluate:
            with timed("evaluate"):
                m = evaluate_clustering(cfg, cdir)
            prefix = cdir.name.rsplit("-", 1)[0]
            metrics.update({f"{prefix}_{k}": m[k] for k in SCAN_SUMMARY if k in m})
    return metrics


def validation_figures(cfg: DictConfig, run: RunDir, checkpoint: Path | None, learned: Representation,
                       timed: StageTimer) -> dict[str, Any]:
    """Figures for tuning (``val_*``): a validation subset of the train split, never the test split."""
    val_fraction = float((cfg.evaluate.get("validation") or {}).get("fraction", 0) or 0)
    if not (cfg.stages.evaluate and val_fraction > 0 and "train" in learned.splits):
        return {}
    labels = read_embeddings(learned.splits["train"], with_labels=True).index.labels
    if labels is None or not (labels >= 0).any():
        log.info("no validation figures: the train split has no labels")
        return {}
    with timed("evaluate"):
        train_clustered = learned.splits["train"]
        if cfg.clustering.features != cfg.export.features:
            train_clustered = export_split(cfg, run, "train", checkpoint, cfg.clustering.features,
                                           name=f"train_{cfg.clustering.features}")
        return validation_metrics(cfg, train_clustered, learned.splits["train"])


def run_pipeline(cfg: DictConfig) -> RunDir:
    """pretrain -> export -> cluster -> evaluate -> report, on each representation the run compares."""
    t0 = time.perf_counter()
    resolve_data_defaults(cfg)  # data-aware defaults (data.*=auto), before anything reads them
    check_data_config(cfg)
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    embeddings = Path(cfg.embeddings).expanduser() if cfg.embeddings else None
    if embeddings is not None:
        read_manifest(embeddings)  # fail now, not after training
    if cfg.get("naming") is not None and cfg.naming.enabled:
        from sslcluster.stages.naming import check_settings

        check_settings(cfg.naming)  # fail now too
    if cfg.stages.get("scan"):
        check_scan_config(cfg)  # fail now, not after pretraining
        if embeddings is not None or (checkpoint is None and not cfg.stages.pretrain):
            raise SSLClusterError("stages.scan=true trains the pretrained model: it needs pretraining or "
                                  "checkpoint=PATH (not embeddings=PATH or a backbone used as it is)")
    learned = None  # frozen pretrained features: built now, so a missing weights file fails before anything runs
    if checkpoint is None and embeddings is None and not cfg.stages.pretrain and cfg.stages.export:
        learned = frozen_learned(cfg)
    baselines = baseline_representations(cfg) if embeddings is None else []
    timed = StageTimer()
    with open_run(cfg, "run", reuse=False) as run, tracking_session(cfg, run) as tracker:
        if checkpoint is None and embeddings is None and cfg.stages.pretrain:
            with timed("pretrain"):
                checkpoint = pretrain(cfg, run, logger=tracker.training_logger())
        metrics: dict[str, Any] = {}
        reps = export_representations(cfg, run, checkpoint, embeddings, timed, learned, baselines)  # every process
        scanned: list[Path] = []
        if cfg.stages.get("scan") and checkpoint is not None:
            with timed("scan"):
                scanned = scan_stage(cfg, run, checkpoint)  # every process trains; rank 0 writes
        if not is_global_rank_zero():
            return run  # DDP processes other than rank 0 stop after the export (and the SCAN stage)
        for rep in reps:
            metrics.update(score_representation(cfg, run, rep, timed))
        metrics.update(score_scan(cfg, scanned, timed))
        metrics.update(validation_figures(cfg, run, checkpoint, reps[0], timed))
        metrics.update({f"time_{stage}_s": seconds for stage, seconds in timed.seconds.items()})
        metrics["wall_time_s"] = time.perf_counter() - t0
        metrics["seed"] = cfg.seed
        run.update_metrics(metrics)
        print(report(run, metrics["wall_time_s"], timed.seconds))
        if cfg.get("report") is None or cfg.report.enabled:
            start = time.perf_counter()
            page = write_report(cfg, run, timed.seconds)
            seconds = time.perf_counter() - start
            run.update_metrics({"time_report_s": seconds})
            print(f"report: {page} (written in {seconds:.1f} s)")
        tracker.log_final(run.read_metrics())  # logger=wandb: summary, pictures, per-cluster tables (rank 0)
    return run


# -- single stages -----------------------------------------------------------------------------------------

def stage_pretrain(cfg: DictConfig) -> RunDir:
    """Pretrain into a new run directory (or resume one); prints the checkpoint and the run key."""
    resolve_data_defaults(cfg)
    check_data_config(cfg)
    with open_run(cfg, "pretrain", reuse=False) as run:
        ckpt = pretrain(cfg, run)
        if not is_global_rank_zero():
            return run
        print(f"checkpoint: {ckpt}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_scan(cfg: DictConfig) -> RunDir:
    """SCAN's recipe on an existing run's pretrained checkpoint (or ``checkpoint=PATH``): neighbours, backbone +
    heads, self-labelling, into ``clusters/scan_backbone-<split>/`` and ``clusters/scan_selflabel-<split>/``, each
    evaluated (``stages.evaluate``); their figures join the run's metrics.json."""
    resolve_data_defaults(cfg)  # data.*=auto: the run's own decisions (precision, views, k)
    check_scan_config(cfg)
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    with open_run(cfg, "scan", must_exist=True) as run:
        pretrained = checkpoint or run.checkpoints_dir / "last.ckpt"
        if not pretrained.is_file():
            raise SSLClusterError(f"checkpoint not found: {pretrained} (set checkpoint=PATH)")
        timed = StageTimer()
        with timed("scan"):
            scanned = scan_stage(cfg, run, pretrained)
        if not is_global_rank_zero():
            return run
        metrics = score_scan(cfg, scanned, timed)
        metrics.update({f"time_{stage}_s": seconds for stage, seconds in timed.seconds.items()})
        run.update_metrics(metrics)
        for cdir in scanned:
            m = read_json(cdir / "metrics.json") if (cdir / "metrics.json").is_file() else {}
            print(f"{cdir.name}: " + ", ".join(f"{k}={m[k]:.4f}" for k in ("nmi", "ari", "acc") if k in m))
        print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_export(cfg: DictConfig) -> RunDir:
    """Export ``export.splits`` of an existing run's checkpoint (or ``checkpoint=PATH``, or with
    ``stages.pretrain=false`` a pretrained backbone's features as they are) into its embeddings."""
    resolve_data_defaults(cfg)
    check_data_config(cfg)
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    frozen = None  # no checkpoint given, a pretrained backbone: its features as they are (stages.pretrain=false)
    if checkpoint is None and not cfg.stages.pretrain and cfg.backbone.get("eval") is not None:
        frozen = frozen_learned(cfg)
    with open_run(cfg, "export") as run:
        if checkpoint is None and frozen is None:
            checkpoint = _existing_file(str(run.checkpoints_dir / "last.ckpt"), "checkpoint (set checkpoint=PATH)")
        frozen_model = frozen.model if frozen is not None else None
        done = []
        for s in cfg.export.splits:
            if frozen is not None:
                done.append(export_split(cfg, run, s, None, "backbone", model=frozen.model, eval_node=frozen.eval_node,
                                         info=frozen.info, distributed=True))
            else:
                done.append(export_split(cfg, run, s, checkpoint, cfg.export.features, distributed=True))
        for s, features, name in clustering_exports(cfg):  # what the cluster stage reads
            if frozen_model is None and not (features == cfg.export.features and s in cfg.export.splits):
                done.append(export_split(cfg, run, s, checkpoint, features, name=name, distributed=True))
        if is_global_rank_zero():  # every process of a multi-process launch exported its share
            print("\n".join(f"exported: {d}" for d in done))
            print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_cluster(cfg: DictConfig) -> RunDir:
    """Cluster the run's embeddings (or ``embeddings=PATH``) into ``clusters/<clustering.key>/``."""
    resolve_data_defaults(cfg)
    emb = Path(cfg.embeddings).expanduser() if cfg.embeddings else None
    if emb is not None:
        read_manifest(emb)
    with open_run(cfg, "cluster") as run:
        if emb is None:
            emb = run.embeddings_dir(clustered_embeddings_name(cfg))
            if not emb.is_dir():  # no export of clustering.features: the split's own embeddings, whatever they hold
                fallback = run.embeddings_dir(cfg.clustering.split)
                if not fallback.is_dir():
                    raise SSLClusterError(f"no embeddings to cluster in {run.path / 'embeddings'} (looked for "
                                          f"{emb.name}, {fallback.name}): run `sslcluster export run.key={run.key}` "
                                          "or set embeddings=PATH")
                log.warning("no %s; clustering %s (clustering.features=%s)", emb, fallback, cfg.clustering.features)
                emb = fallback
        # the first clustering of a representation is the run's own (its summary); later ones are additions
        rep, key = representation_of(Embeddings(emb)), cluster_key(cfg)
        others = [c for c in run.clusterings() if c.key != key and c.read_record().get("primary")
                  and c.read_record().get("representation") == rep]
        out = cluster(cfg, run, emb, key, overwrite=cfg.run.overwrite or cfg.clustering.overwrite,
                      representation=rep, primary=not others)
        print(f"clusters: {out}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_name(cfg: DictConfig) -> RunDir:
    """Name the clusters of ``clustering.key`` (default: the pipeline's learned clustering) with ``cfg.naming``,
    whether or not ``naming.enabled``; writes ``clusters/<key>/names.json``."""
    from sslcluster.stages.naming import name_clustering

    resolve_data_defaults(cfg)
    with open_run(cfg, "name", must_exist=True) as run:
        key = cluster_key(cfg)
        cdir = run.cluster_dir(key)
        if not run.clustering(key).exists():
            have = [c.key for c in run.clusterings()]
            raise SSLClusterError(f"no clustering {key!r} in run {run.key} (clustering.key=...; have: "
                                  f"{', '.join(have) or 'none'})")
        path = name_clustering(cfg, cdir)
        if path is not None:
            print(f"names: {path}")
            for picture in redraw_plots(cfg, cdir):  # the sample grid and scatter legends now show the names
                print(f"picture: {picture}")
        print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_evaluate(cfg: DictConfig) -> RunDir:
    """Score the run's clusterings (``clustering.key``, or all) and representations; the run's summary describes its
    primary clustering of each representation (as recorded in ``record.json``)."""
    resolve_data_defaults(cfg)
    with open_run(cfg, "evaluate", must_exist=True) as run, tracking_session(cfg, run) as tracker:
        chosen = [run.clustering(cfg.clustering.key)] if cfg.clustering.key else run.clusterings()
        if not chosen:
            raise SSLClusterError(f"no clusterings in {run.path / 'clusters'}; run the cluster stage first")
        metrics: dict[str, Any] = {}
        for clustering in chosen:
            m = evaluate_clustering(cfg, clustering.path)  # always: clusters/<key>/metrics.json
            record = clustering.record()
            if record.get("primary") and record.get("representation"):
                prefix = metric_prefix(str(record["representation"]))
                metrics.update({prefix + k: v for k, v in m.items()})
            print(f"{clustering.key}: " + ", ".join(f"{k}={m[k]:.4f}" for k in ("nmi", "ari", "acc") if k in m))
        prefixes = dict.fromkeys([p for p, _ in REPRESENTATIONS.values()] + [
            metric_prefix(str(c.read_record()["representation"])) for c in run.clusterings()
            if c.read_record().get("representation")])
        for prefix in prefixes:
            splits = {s: run.embeddings(f"{prefix}{s}") for s in ("train", "test")}
            if all(e.is_complete() for e in splits.values()):
                rep = evaluate_representation(cfg, splits["train"].path, splits["test"].path)
                metrics.update({prefix + k: v for k, v in rep.items()})
        run.update_metrics(metrics)
        print(report(run))
        if cfg.get("report") is None or cfg.report.enabled:
            print(f"report: {write_report(cfg, run)}")
        tracker.log_final(run.read_metrics())  # logger=wandb: a new W&B run, job_type=evaluate
    return run


def stage_report(cfg: DictConfig) -> RunDir:
    """Write ``runs/<key>/report.html`` of an existing run (again), from what is on disk."""
    resolve_data_defaults(cfg)
    with open_run(cfg, "report", must_exist=True) as run:
        start = time.perf_counter()
        page = write_report(cfg, run)
        print(f"report: {page} (written in {time.perf_counter() - start:.1f} s)\nrun key: {run.key}")
    return run


def stage_fiftyone(cfg: DictConfig) -> RunDir:
    """Load an existing run into a persistent FiftyOne dataset (``fiftyone.dataset``, default the run key) and,
    with ``fiftyone.launch``, serve the FiftyOne App on it (the ``fiftyone`` extra)."""
    from sslcluster.stages.fiftyone_export import WORKSPACE, export_run

    with open_run(cfg, "fiftyone", must_exist=True) as run:
        dataset = export_run(cfg, run)
        print(f"FiftyOne dataset: {dataset.name} ({len(dataset)} samples)\nrun key: {run.key}")
        launch = bool(cfg.fiftyone.launch)
        if launch:
            run.release()  # the App may run for hours: other stages may work in the run meanwhile
    if launch:
        from sslcluster.integrations.fiftyone import launch_app

        launch_app(dataset, int(cfg.fiftyone.port), str(cfg.fiftyone.address), workspace=WORKSPACE)
    return run
