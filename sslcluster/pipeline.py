"""The stages wired together. ``run_pipeline`` is the main job (``python train.py``); the ``stage_*`` functions
run one stage, on a new run directory or on an existing one (``run.key=...``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from sslcluster.config import to_yaml
from sslcluster.distributed import RUN_KEY_ENV, is_global_rank_zero
from sslcluster.errors import SSLClusterError
from sslcluster.stages.cluster import cluster
from sslcluster.stages.evaluate import (evaluate_clustering, evaluate_representation, redraw_plots,
                                        validation_metrics)
from sslcluster.stages.common import check_data_config
from sslcluster.stages.export import export_split
from sslcluster.stages.pretrain import pretrain
from sslcluster.stages.report import report, write_report
from sslcluster.store.embeddings import Embeddings, read_manifest
from sslcluster.store.io import write_text
from sslcluster.store.rundir import RunDir
from sslcluster.tracking.wandb_log import tracking_session

log = logging.getLogger(__name__)

BASELINE_PREFIX = "pixels_"


@dataclass
class Representation:
    """One representation a run compares: its embeddings per split (kNN and linear probe score ``train`` against
    ``test``) and the embeddings it clusters. Its results enter ``metrics.json`` under ``metric_prefix``, its
    clustering under the key ``key_prefix + <cluster key>``; the name is recorded in the clustering's record."""

    name: str
    metric_prefix: str
    key_prefix: str
    splits: dict[str, Path] = field(default_factory=dict)
    clustered: Path | None = None
    named: bool = False  # whether its clustering is named (naming.enabled) before evaluation

    def cluster_key(self, cfg: DictConfig) -> str:
        """The clustering's key: ``cluster.key``, else ``<algorithm>-<split>``, after ``prefix``."""
        return self.key_prefix + cluster_key(cfg)


#: the representations a run can hold, by the name recorded in ``record.json``: metric and key prefixes.
REPRESENTATIONS = {"learned": ("", ""), "pixels": (BASELINE_PREFIX, "pixels-")}


def representation_of(embeddings: Embeddings) -> str:
    """The representation an embeddings set holds: ``pixels`` for raw pixels, else ``learned``."""
    return "pixels" if embeddings.manifest().get("features") == "pixels" else "learned"


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
    split = cfg.cluster.split
    return split if cfg.cluster.features == cfg.export.features else f"{split}_{cfg.cluster.features}"


def cluster_key(cfg: DictConfig, prefix: str = "") -> str:
    """The clustering's key: ``cluster.key``, else ``<algorithm>-<split>``, after ``prefix``."""
    base = cfg.cluster.key or f"{cfg.clustering.name}-{cfg.cluster.split}"
    return f"{prefix}{base}"


class _Timer:
    """Wall time per stage, for ``time_<stage>_s`` in metrics.json (where a run's minutes go)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def export_representations(cfg: DictConfig, run: RunDir, checkpoint: Path | None, embeddings: Path | None,
                           timed: _Timer) -> list[Representation]:
    """Export what the run compares: the learned features (or the given ``embeddings``) and the pixel baseline.

    Under a multi-process launch (DDP training, or ``trainer.devices``/``num_nodes`` above 1) every process exports
    its share of the learned features; the baseline (no model) is exported by global rank 0 alone, after the
    other processes have returned."""
    split = cfg.cluster.split
    learned = Representation("learned", *REPRESENTATIONS["learned"])
    learned.named = cfg.get("naming") is not None and bool(cfg.naming.enabled)
    if embeddings is not None:
        learned.splits[split] = learned.clustered = embeddings
    elif cfg.stages.export:
        with timed("export"):
            for s in dict.fromkeys([*cfg.export.splits, split]):
                learned.splits[s] = export_split(cfg, run, s, checkpoint, cfg.export.features, distributed=True)
            learned.clustered = learned.splits[split]
            if cfg.cluster.features != cfg.export.features:
                learned.clustered = export_split(cfg, run, split, checkpoint, cfg.cluster.features,
                                                 name=clustered_embeddings_name(cfg), distributed=True)
    reps = [learned]
    if not is_global_rank_zero():
        return reps
    if cfg.stages.baseline and embeddings is None:
        pixels = Representation("pixels", *REPRESENTATIONS["pixels"])
        with timed("baseline"):
            for s in dict.fromkeys([*learned.splits, split]):
                pixels.splits[s] = export_split(cfg, run, s, None, "pixels")
        pixels.clustered = pixels.splits[split]
        reps.append(pixels)
    return reps


def score_representation(cfg: DictConfig, run: RunDir, rep: Representation, timed: _Timer) -> dict[str, Any]:
    """Cluster (name) and evaluate one representation; its metrics under its prefix."""
    metrics: dict[str, Any] = {}
    stage = "cluster" if rep.name == "learned" else "baseline"
    if rep.clustered is not None and cfg.stages.cluster:
        with timed(stage):
            cdir = cluster(cfg, run, rep.clustered, rep.cluster_key(cfg), overwrite=cfg.run.overwrite,
                           representation=rep.name, primary=True)
        if rep.named:  # before evaluation, so the pictures carry the names
            from sslcluster.naming import name_in_pipeline  # the naming client is imported only when used

            with timed("naming"):
                name_in_pipeline(cfg, cdir)  # optional: warns (never fails the run) without a key
        if cfg.stages.evaluate:
            with timed("evaluate" if rep.name == "learned" else stage):
                metrics.update(evaluate_clustering(cfg, cdir))
    if cfg.stages.evaluate and "train" in rep.splits and "test" in rep.splits:
        with timed("evaluate" if rep.name == "learned" else stage):
            metrics.update(evaluate_representation(cfg, rep.splits["train"], rep.splits["test"]))
    return {rep.metric_prefix + k: v for k, v in metrics.items()}


def validation_figures(cfg: DictConfig, run: RunDir, checkpoint: Path | None, learned: Representation,
                       timed: _Timer) -> dict[str, Any]:
    """Figures for tuning (``val_*``): a validation subset of the train split, never the test split."""
    val_fraction = float((cfg.evaluate.get("validation") or {}).get("fraction", 0) or 0)
    if not (cfg.stages.evaluate and val_fraction > 0 and "train" in learned.splits):
        return {}
    with timed("evaluate"):
        train_clustered = learned.splits["train"]
        if cfg.cluster.features != cfg.export.features:
            train_clustered = export_split(cfg, run, "train", checkpoint, cfg.cluster.features,
                                           name=f"train_{cfg.cluster.features}")
        return validation_metrics(cfg, train_clustered, learned.splits["train"])


def run_pipeline(cfg: DictConfig) -> RunDir:
    """pretrain -> export -> cluster -> evaluate -> report, on each representation the run compares."""
    t0 = time.perf_counter()
    check_data_config(cfg)
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    embeddings = Path(cfg.embeddings).expanduser() if cfg.embeddings else None
    if embeddings is not None:
        read_manifest(embeddings)  # fail now, not after training
    if cfg.get("naming") is not None and cfg.naming.enabled:
        from sslcluster.naming import check_settings

        check_settings(cfg.naming)  # fail now too
    timed = _Timer()
    with open_run(cfg, "run", reuse=False) as run, tracking_session(cfg, run) as tracker:
        if checkpoint is None and embeddings is None and cfg.stages.pretrain:
            with timed("pretrain"):
                checkpoint = pretrain(cfg, run, logger=tracker.training_logger())
        metrics: dict[str, Any] = {}
        reps = export_representations(cfg, run, checkpoint, embeddings, timed)  # on every process
        if not is_global_rank_zero():
            return run  # DDP processes other than rank 0 stop after the export
        for rep in reps:
            metrics.update(score_representation(cfg, run, rep, timed))
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
    check_data_config(cfg)
    with open_run(cfg, "pretrain", reuse=False) as run:
        ckpt = pretrain(cfg, run)
        if not is_global_rank_zero():
            return run
        print(f"checkpoint: {ckpt}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_export(cfg: DictConfig) -> RunDir:
    """Export ``export.splits`` of an existing run's checkpoint (or ``checkpoint=PATH``) into its embeddings."""
    check_data_config(cfg)
    checkpoint = _existing_file(cfg.checkpoint, "checkpoint")
    with open_run(cfg, "export") as run:
        if checkpoint is None:
            checkpoint = _existing_file(str(run.checkpoints_dir / "last.ckpt"), "checkpoint (set checkpoint=PATH)")
        done = [export_split(cfg, run, s, checkpoint, cfg.export.features, distributed=True)
                for s in cfg.export.splits]
        if cfg.cluster.features != cfg.export.features:  # what the cluster stage reads by default
            done.append(export_split(cfg, run, cfg.cluster.split, checkpoint, cfg.cluster.features,
                                     name=clustered_embeddings_name(cfg), distributed=True))
        if is_global_rank_zero():  # every process of a multi-process launch exported its share
            print("\n".join(f"exported: {d}" for d in done))
            print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_cluster(cfg: DictConfig) -> RunDir:
    """Cluster the run's embeddings (or ``embeddings=PATH``) into ``clusters/<cluster.key>/``."""
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
        # the first clustering of a representation is the run's own (its summary); later ones are additions
        rep, key = representation_of(Embeddings(emb)), cluster_key(cfg)
        others = [c for c in run.clusterings() if c.key != key and c.read_record().get("primary")
                  and c.read_record().get("representation") == rep]
        out = cluster(cfg, run, emb, key, overwrite=cfg.run.overwrite or cfg.cluster.overwrite,
                      representation=rep, primary=not others)
        print(f"clusters: {out}\nrun key: {run.key}\nrun dir: {run.path}")
    return run


def stage_name(cfg: DictConfig) -> RunDir:
    """Name the clusters of ``cluster.key`` (default: the pipeline's learned clustering) with ``cfg.naming``,
    whether or not ``naming.enabled``; writes ``clusters/<key>/names.json``."""
    from sslcluster.naming import name_clustering

    with open_run(cfg, "name", must_exist=True) as run:
        key = cluster_key(cfg)
        cdir = run.cluster_dir(key)
        if not run.clustering(key).exists():
            have = [c.key for c in run.clusterings()]
            raise SSLClusterError(f"no clustering {key!r} in run {run.key} (cluster.key=...; have: "
                                  f"{', '.join(have) or 'none'})")
        path = name_clustering(cfg, cdir)
        if path is not None:
            print(f"names: {path}")
            for picture in redraw_plots(cfg, cdir):  # the sample grid and scatter legends now show the names
                print(f"picture: {picture}")
        print(f"run key: {run.key}\nrun dir: {run.path}")
    return run


def stage_evaluate(cfg: DictConfig) -> RunDir:
    """Score the run's clusterings (``cluster.key``, or all) and representations; the run's summary describes its
    primary clustering of each representation (as recorded in ``record.json``)."""
    with open_run(cfg, "evaluate", must_exist=True) as run, tracking_session(cfg, run) as tracker:
        chosen = [run.clustering(cfg.cluster.key)] if cfg.cluster.key else run.clusterings()
        if not chosen:
            raise SSLClusterError(f"no clusterings in {run.path / 'clusters'}; run the cluster stage first")
        metrics: dict[str, Any] = {}
        for clustering in chosen:
            m = evaluate_clustering(cfg, clustering.path)  # always: clusters/<key>/metrics.json
            record = clustering.record()
            if record.get("primary") and record.get("representation") in REPRESENTATIONS:
                prefix = REPRESENTATIONS[record["representation"]][0]
                metrics.update({prefix + k: v for k, v in m.items()})
            print(f"{clustering.key}: " + ", ".join(f"{k}={m[k]:.4f}" for k in ("nmi", "ari", "acc") if k in m))
        for prefix, _ in REPRESENTATIONS.values():
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
    with open_run(cfg, "report", must_exist=True) as run:
        start = time.perf_counter()
        page = write_report(cfg, run)
        print(f"report: {page} (written in {time.perf_counter() - start:.1f} s)\nrun key: {run.key}")
    return run
