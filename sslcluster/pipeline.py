"""The stages wired together. ``run_pipeline`` is the main job (``python train.py``); the ``stage_*`` functions
run one stage, on a new run directory or on an existing one (``run.key=...``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from sslcluster.config import to_yaml
from sslcluster.errors import SSLClusterError
from sslcluster.stages.cluster import cluster
from sslcluster.stages.evaluate import evaluate_clustering, evaluate_representation, redraw_plots
from sslcluster.stages.export import export_split
from sslcluster.stages.pretrain import RUN_KEY_ENV, is_launch_rank_zero, pretrain
from sslcluster.stages.report import report, write_report
from sslcluster.tracking.embeddings import read_manifest
from sslcluster.tracking.io import write_text
from sslcluster.tracking.rundir import RunDir
from sslcluster.tracking.wandb_log import tracking_session

log = logging.getLogger(__name__)

BASELINE_PREFIX = "pixels_"


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
    if not is_launch_rank_zero():  # a DDP process other than rank 0: rank 0's run directory, written by rank 0
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
    split = cfg.cluster.split
    return split if cfg.cluster.features == cfg.export.features else f"{split}_{cfg.cluster.features}"


def cluster_key(cfg: DictConfig, prefix: str = "") -> str:
    base = cfg.cluster.key or f"{cfg.clustering.name}-{cfg.cluster.split}"
    return f"{prefix}{base}"


def run_pipeline(cfg: DictConfig) -> RunDir:
    """pretrain -> export -> cluster -> evaluate -> report, on the learned features and the pixel baseline."""
    t0 = time.perf_counter()
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    embeddings = Path(cfg.embeddings).expanduser() if cfg.embeddings else None
    if embeddings is not None:
        read_manifest(embeddings)  # fail now, not after training
    naming = cfg.get("naming") is not None and cfg.naming.enabled
    if naming:
        from sslcluster.naming import check_settings, name_in_pipeline

        check_settings(cfg.naming)  # fail now too
    split = cfg.cluster.split
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(stage: str) -> Iterator[None]:
        """Adds the block's wall time to ``time_<stage>_s`` in metrics.json (where a run's minutes go)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start

    with open_run(cfg, "run", reuse=False) as run, tracking_session(cfg, run) as tracker:
        if checkpoint is None and embeddings is None and cfg.stages.pretrain:
            with timed("pretrain"):
                checkpoint = pretrain(cfg, run)
            if not is_launch_rank_zero():
                return run  # DDP processes other than rank 0 stop after training
        learned: dict[str, Path] = {}
        if embeddings is not None:
            learned[split] = embeddings
        elif cfg.stages.export:
            with timed("export"):
                splits = list(dict.fromkeys([*cfg.export.splits, split]))
                for s in splits:
                    learned[s] = export_split(cfg, run, s, checkpoint, cfg.export.features)
        to_cluster: dict[str, Path] = {}
        if split in learned:
            to_cluster[split] = learned[split]
            if embeddings is None and cfg.cluster.features != cfg.export.features:
                with timed("export"):
                    to_cluster[split] = export_split(cfg, run, split, checkpoint, cfg.cluster.features,
                                                     name=clustered_embeddings_name(cfg))
        pixels: dict[str, Path] = {}
        if cfg.stages.baseline and embeddings is None:
            with timed("baseline"):
                for s in dict.fromkeys([*learned.keys(), split]):
                    pixels[s] = export_split(cfg, run, s, None, "pixels")
        metrics: dict = {}
        for feats, clustered, prefix in ((learned, to_cluster, ""), (pixels, pixels, BASELINE_PREFIX)):
            if split not in clustered:
                continue
            if cfg.stages.cluster:
                with timed("baseline" if prefix else "cluster"):
                    cdir = cluster(cfg, run, clustered[split], cluster_key(cfg, prefix.replace("_", "-")),
                                   overwrite=cfg.run.overwrite)
                if not prefix and naming:  # before evaluation, so the pictures carry the names
                    with timed("naming"):
                        name_in_pipeline(cfg, cdir)  # optional: warns (never fails the run) without a key
                if cfg.stages.evaluate:
                    with timed("baseline" if prefix else "evaluate"):
                        metrics.update({prefix + k: v for k, v in evaluate_clustering(cfg, cdir).items()})
            if cfg.stages.evaluate and "train" in feats and "test" in feats:
                with timed("baseline" if prefix else "evaluate"):
                    rep = evaluate_representation(cfg, feats["train"], feats["test"])
                metrics.update({prefix + k: v for k, v in rep.items()})
        metrics.update({f"time_{stage}_s": seconds for stage, seconds in timings.items()})
        metrics["wall_time_s"] = time.perf_counter() - t0
        metrics["seed"] = cfg.seed
        run.update_metrics(metrics)
        print(report(run, metrics["wall_time_s"], timings))
        if cfg.get("report") is None or cfg.report.enabled:
            start = time.perf_counter()
            page = write_report(cfg, run, timings)
            seconds = time.perf_counter() - start
            run.update_metrics({"time_report_s": seconds})
            print(f"report: {page} (written in {seconds:.1f} s)")
        tracker.log_final(run.read_metrics())  # logger=wandb: summary, pictures, per-cluster tables (rank 0)
    return run


# -- single stages -----------------------------------------------------------------------------------------

def stage_pretrain(cfg: DictConfig) -> RunDir:
    with open_run(cfg, "pretrain", reuse=False) as run:
        ckpt = pretrain(cfg, run)
        if not is_launch_rank_zero():
            return run
        print(f"checkpoint: {ckpt}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_export(cfg: DictConfig) -> RunDir:
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    with open_run(cfg, "export") as run:
        if checkpoint is None:
            checkpoint = _existing_file(str(run.checkpoints_dir / "last.ckpt"), "checkpoint (set checkpoint=PATH)")
        for s in cfg.export.splits:
            print(f"exported: {export_split(cfg, run, s, checkpoint, cfg.export.features)}")
        if cfg.cluster.features != cfg.export.features:  # what the cluster stage reads by default
            print(f"exported: {export_split(cfg, run, cfg.cluster.split, checkpoint, cfg.cluster.features, name=clustered_embeddings_name(cfg))}")
        print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_cluster(cfg: DictConfig) -> RunDir:
    emb = Path(cfg.embeddings).expanduser() if cfg.embeddings else None
    if emb is not None:
        read_manifest(emb)
    with open_run(cfg, "cluster") as run:
        if emb is None:
            emb = run.embeddings_dir(clustered_embeddings_name(cfg))
            if not emb.is_dir():  # no export of cluster.features: the split's own embeddings, whatever they hold
                fallback = run.embeddings_dir(cfg.cluster.split)
                if not fallback.is_dir():
                    raise SSLClusterError(f"no embeddings to cluster in {run.path / 'embeddings'} (looked for "
                                          f"{emb.name}, {fallback.name}): run `sslcluster export run.key={run.key}` "
                                          "or set embeddings=PATH")
                log.warning("no %s; clustering %s (cluster.features=%s)", emb, fallback, cfg.cluster.features)
                emb = fallback
        out = cluster(cfg, run, emb, cluster_key(cfg), overwrite=cfg.run.overwrite or cfg.cluster.overwrite)
        print(f"clusters: {out}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_name(cfg: DictConfig) -> RunDir:
    """Name the clusters of ``cluster.key`` (default: the pipeline's learned clustering) with ``cfg.naming``,
    whether or not ``naming.enabled``; writes ``clusters/<key>/names.json``."""
    from sslcluster.naming import name_clustering

    with open_run(cfg, "name", must_exist=True) as run:
        key = cluster_key(cfg)
        cdir = run.cluster_dir(key)
        if not (cdir / "record.json").is_file():
            have = sorted(p.parent.name for p in (run.path / "clusters").glob("*/record.json"))
            raise SSLClusterError(f"no clustering {key!r} in run {run.key} (cluster.key=...; have: "
                                  f"{', '.join(have) or 'none'})")
        path = name_clustering(cfg, cdir)
        if path is not None:
            print(f"names: {path}")
            for picture in redraw_plots(cfg, cdir):  # the sample grid and scatter legends now show the names
                print(f"picture: {picture}")
        print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def primary_cluster_key(run: RunDir, cfg: DictConfig) -> str:
    """The clustering that the run's ``metrics.json`` summarises: the one its own ``config.yaml`` made (other
    clusterings added later keep their metrics in ``clusters/<key>/metrics.json``)."""
    if run.config_path.is_file():
        own = OmegaConf.load(run.config_path)
        key = OmegaConf.select(own, "cluster.key")
        name, split = OmegaConf.select(own, "clustering.name"), OmegaConf.select(own, "cluster.split")
        if key or (name and split):
            return str(key or f"{name}-{split}")
    return cluster_key(cfg)


def stage_evaluate(cfg: DictConfig) -> RunDir:
    with open_run(cfg, "evaluate", must_exist=True) as run, tracking_session(cfg, run) as tracker:
        clusters_root = run.path / "clusters"
        keys = [cfg.cluster.key] if cfg.cluster.key else sorted(p.name for p in clusters_root.glob("*")
                                                                 if (p / "record.json").exists())
        if not keys:
            raise SSLClusterError(f"no clusterings in {clusters_root}; run the cluster stage first")
        metrics: dict = {}
        primary = primary_cluster_key(run, cfg)
        for key in keys:
            m = evaluate_clustering(cfg, run.cluster_dir(key))  # always: clusters/<key>/metrics.json
            # the run's summary keeps describing the run's own clustering and its pixel baseline
            for prefix in ("", BASELINE_PREFIX):
                if key == prefix.replace("_", "-") + primary:
                    metrics.update({prefix + k: v for k, v in m.items()})
            print(f"{key}: " + ", ".join(f"{k}={m[k]:.4f}" for k in ("nmi", "ari", "acc") if k in m))
        for name, prefix in (("", ""), ("pixels_", BASELINE_PREFIX)):
            tr, te = run.embeddings_dir(f"{name}train"), run.embeddings_dir(f"{name}test")
            if (tr / "manifest.json").exists() and (te / "manifest.json").exists():
                metrics.update({prefix + k: v for k, v in evaluate_representation(cfg, tr, te).items()})
        run.update_metrics(metrics)
        print(report(run))
        if cfg.get("report") is None or cfg.report.enabled:
            print(f"report: {write_report(cfg, run)}")
        tracker.log_final(run.read_metrics())  # logger=wandb: a new W&B run, job_type=evaluate
    return run


def stage_report(cfg: DictConfig) -> RunDir:
    """Write ``runs/<key>/report.html`` of an existing run (again), from what is on disk."""
    with open_run(cfg, "report", must_exist=True) as run:
        start = time.perf_counter()
        page = write_report(cfg, run)
        print(f"report: {page} (written in {time.perf_counter() - start:.1f} s)\nrun key: {run.key}")
    return run
