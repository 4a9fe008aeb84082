"""The SCAN stage (``stages.scan``, ``sslcluster scan run.key=KEY``): SCAN's whole recipe on a pretrained run.

1. Mine the ``scan.num_neighbors`` nearest train images of every train image on the pretrained model's exported
   features (``scan.mine_features``; cosine, the image itself included) -> ``scan/neighbors.npy``.
2. Train the backbone and ``scan.num_heads`` linear heads on (anchor, neighbour) pairs under SCAN's strong
   augmentation with the SCAN loss; choose the head with the lowest SCAN loss over the train graph (never labels);
   assign the clustered split (``clustering.split``, evaluation transform) -> ``clusters/scan_backbone-<split>/``.
3. Self-label (``scan.selflabel.enabled``) from that model and head -> ``clusters/scan_selflabel-<split>/``.

Checkpoints of steps 2 and 3 land in ``scan/checkpoints/{scan,selflabel}/`` (every epoch; ``last.ckpt`` also on
Ctrl-C / SIGTERM) and ``scan.resume=last`` continues both. Under DDP every process runs this function (each
mines the same neighbours in memory); global rank 0 writes the files. The clusterings carry
``record.json`` and ``labels.npy`` as every other, plus ``curve.csv`` (the training curve); the record's
``embeddings`` are the pretrained model's embeddings of the clustered split (the same rows), so the evaluation's
pictures and label-free quality are in that space.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from sslcluster.data.datasets import ImageDataset
from sslcluster.distributed import is_global_rank_zero, run_key_in_env
from sslcluster.errors import SSLClusterError, TrainingInterrupted
from sslcluster.evaluation.metrics import (QUALITY_SPACE, cluster_metrics, external_metrics, internal_metrics,
                                          internal_rows, quality_space)
from sslcluster.progress import mode as progress_mode
from sslcluster.ssl.callbacks import CheckpointOnInterrupt, FinalCheckpoint, NonFiniteLossGuard, RNGState, TrainProgress
from sslcluster.ssl.factory import load_method
from sslcluster.clustering.heads.common import mine_neighbours
from sslcluster.ssl.scan import (SCAN_CONFIG_KEY, ClusteringModel, EpochCurve, NeighborPairs, SCANModule,
                                 SelfLabelModule, WeakStrong, all_logits, choose_head, strong_transform)
from sslcluster.ssl.speed import split_trainer_config
from sslcluster.evaluation.plots import training_curve
from sslcluster.stages.cluster import prepare_cluster_dir, write_curve
from sslcluster.stages.common import build, build_source, flatten, resolve_device, to_plain
from sslcluster.stages.evaluate import validation_rows
from sslcluster.stages.export import export_split
from sslcluster.store.embeddings import Embeddings, open_streaming
from sslcluster.store.io import write_json, write_npy
from sslcluster.store.rundir import RunDir

log = logging.getLogger(__name__)

#: the folder of the stage's own files in a run, and its two steps' checkpoint folders
SCAN_DIR = "scan"
STEPS = ("scan", "selflabel")
#: clustering keys (after them ``-<split>``) of step 2 and step 3
KEYS = {"scan": "scan_backbone", "selflabel": "scan_selflabel"}
#: the curve's columns that are not loss terms (left out of its picture)
CURVE_TIMING = ("step", "seconds", "images", "images_per_s")


def scan_keys(cfg: DictConfig) -> dict[str, str]:
    """The clustering keys of steps 2 and 3: ``scan_backbone-<split>``, ``scan_selflabel-<split>``."""
    split = str(cfg.clustering.split)
    keys = {step: f"{KEYS[step]}-{split}" for step in STEPS}
    if not cfg.scan.selflabel.enabled:
        keys.pop("selflabel")
    return keys


def check_scan_config(cfg: DictConfig) -> None:
    """Refuse bad ``scan`` settings in one line before any work."""
    s = cfg.scan
    if int(s.num_clusters) < 2:
        raise SSLClusterError(f"scan.num_clusters={s.num_clusters} must be at least 2")
    if int(s.num_neighbors) < 1:
        raise SSLClusterError(f"scan.num_neighbors={s.num_neighbors} must be at least 1")
    if int(s.num_heads) < 1:
        raise SSLClusterError(f"scan.num_heads={s.num_heads} must be at least 1")
    if float(s.entropy_weight) < 0:
        raise SSLClusterError(f"scan.entropy_weight={s.entropy_weight} must be >= 0")
    if s.mine_features not in ("backbone", "projection"):
        raise SSLClusterError(f"scan.mine_features={s.mine_features!r}; valid: backbone, projection")
    every = s.get("validation_every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise SSLClusterError(f"scan.validation_every={every!r} must be an integer >= 0 (0: off)")
    if s.resume not in (None, "last"):
        raise SSLClusterError(f"scan.resume={s.resume!r}; valid: null, last")
    for key, node in (("scan", s), ("scan.selflabel", s.selflabel)):
        if int(node.epochs) < 1 or int(node.batch_size) < 1:
            raise SSLClusterError(f"{key}.epochs={node.epochs}, {key}.batch_size={node.batch_size}: both must "
                                  "be at least 1")
    if not 0.0 <= float(s.selflabel.confidence_threshold) < 1.0:
        raise SSLClusterError(f"scan.selflabel.confidence_threshold={s.selflabel.confidence_threshold} must be "
                              "in [0, 1)")


def _settings(cfg: DictConfig, step: str) -> dict[str, Any]:
    """What a step's checkpoint must agree on to be resumed: the scan block (less run controls; step 2 less the
    self-labelling settings, which may change before step 3 starts) and the seed."""
    s = to_plain(cfg.scan)
    for key in ("resume", "overwrite", *(("selflabel",) if step == "scan" else ())):
        s.pop(key, None)
    return {"step": step, "seed": int(cfg.seed), "scan": s, "clustering_split": str(cfg.clustering.split)}


def _checkpoint_settings(path: Path) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False).get(SCAN_CONFIG_KEY)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SSLClusterError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(saved, dict):
        raise SSLClusterError(f"{path} is not a SCAN stage checkpoint (no {SCAN_CONFIG_KEY!r})")
    return saved


def _check_same(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    a, b = flatten(saved), flatten(now)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise SSLClusterError(f"scan.resume=last: {path} has {key}={a.get(key)!r}, this run {b.get(key)!r}; "
                                  "repeat the stopped run's overrides")


def _sync() -> None:
    """Wait for every process of a DDP launch (nothing when alone): global rank 0 assembles an export's files after
    the others have returned from it, and they read them next."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _embeddings(cfg: DictConfig, run: RunDir, split: str, features: str, checkpoint: Path) -> Path:
    """The run's embeddings of ``split`` in ``features`` (exported now when the export stage left none; every
    process decides alike, as all waited for rank 0's last assembly in :func:`scan_stage`)."""
    name = split if features == cfg.export.features else f"{split}_{features}"
    path = run.embeddings_dir(name)
    if not Embeddings(path).is_complete():
        path = export_split(cfg, run, split, checkpoint, features, name=name, distributed=True)
        _sync()  # rank 0 has assembled the set
    return path


def _trainer(cfg: DictConfig, run: RunDir, step: str, epochs: int, curve: EpochCurve,
             extra: list[pl.Callback] | None = None) -> tuple[pl.Trainer, Path]:
    ckpt_dir = run.path / SCAN_DIR / "checkpoints" / step
    last = ckpt_dir / "last.ckpt"
    kwargs, speed = split_trainer_config(cfg.trainer)
    kwargs["max_epochs"] = int(epochs)
    if kwargs.get("sync_batchnorm") and (kwargs.get("accelerator") == "cpu" or not torch.cuda.is_available()):
        raise SSLClusterError("trainer.sync_batchnorm=true needs GPUs; on CPU leave it false")
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                                     save_last=True, every_n_epochs=int(speed["checkpoint_every_n_epochs"]),
                                     save_top_k=1, monitor=None, enable_version_counter=False),
        CheckpointOnInterrupt(last), RNGState(), NonFiniteLossGuard(ckpt_dir), FinalCheckpoint(last), curve,
        *(extra or [])]
    kwargs["enable_progress_bar"] = False
    if progress_mode() != "off":
        callbacks.append(TrainProgress())
    return pl.Trainer(**kwargs, default_root_dir=str(run.path), logger=False, callbacks=callbacks), last


def _fit(cfg: DictConfig, run: RunDir, trainer: pl.Trainer, module: pl.LightningModule, loader: Any,
         last: Path, resume: bool, step: str) -> None:
    """Train one step, from ``last`` when resuming and it exists; SIGTERM becomes :class:`TrainingInterrupted`."""
    ckpt = str(last) if resume and last.is_file() else None
    if ckpt is not None:
        _check_same(_checkpoint_settings(last), module.settings, last)  # type: ignore[arg-type]
    module.train()  # Lightning keeps the modules' mode: the loaded backbone and the evaluation passes left eval mode
    try:
        with run_key_in_env(run.key):  # processes started by Lightning's DDP launcher reuse this run directory
            trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    except SIGTERMException:
        raise TrainingInterrupted(f"SCAN stage ({step}) stopped by SIGTERM at step {trainer.global_step}; {last} "
                                  f"saved, continue with run.key={run.key} scan.resume=last") from None
    if trainer.is_global_zero and not last.exists():
        raise SSLClusterError(f"SCAN stage ({step}) ended without writing {last}")


def _loader(dataset: Any, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Shuffled batches, the last partial one dropped (SCAN's ``get_train_dataloader``); Lightning makes the
    sampler a DistributedSampler under DDP."""
    if len(dataset) < batch_size:
        raise SSLClusterError(f"batch size {batch_size} is above the {len(dataset)} train images (every batch "
                              "would be dropped); lower scan.batch_size / scan.selflabel.batch_size")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=num_workers, persistent_workers=False)


def _write_clustering(cfg: DictConfig, run: RunDir, key: str, algorithm: str, labels: np.ndarray,
                      embeddings: Path, params: dict[str, Any], fit_info: dict[str, Any],
                      curve: list[dict[str, Any]], times: dict[str, float]) -> Path:
    """``clusters/<key>/`` of one step: record (running, then complete), labels, ``curve.csv``."""
    manifest, array, ids_sha256 = open_streaming(embeddings)
    if len(labels) != int(array.shape[0]):
        raise SSLClusterError(f"{len(labels)} assignments for the {array.shape[0]} rows of {embeddings}")
    out = prepare_cluster_dir(run, key, overwrite=True)  # refused earlier (check_targets) unless overwrite
    record: dict[str, Any] = {
        "key": key, "algorithm": algorithm, "params": params, "preprocess": [],
        "config": {"scan": to_plain(cfg.scan), "clustering": {"split": str(cfg.clustering.split)}},
        "embeddings": run.store_path(embeddings), "features": manifest.get("features"),
        "representation": "learned", "primary": False, "ids_sha256": ids_sha256, "n_points": int(len(labels)),
        "seed": int(cfg.seed), "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "record.json", record)
    try:
        quality = cluster_metrics(None, labels, None)
        rows = internal_rows(labels)
        quality.update(internal_metrics(quality_space(array[rows]), labels[rows]))
        write_curve(out, curve)
        losses = [{k: v for k, v in row.items() if k not in CURVE_TIMING} for row in curve]
        training_curve(losses, out / "plots" / "training_curve.png", title=f"{key}: loss terms per epoch")
        write_npy(out / "labels.npy", labels)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    record.update({"clustered_dim": int(array.shape[1]), "quality_space": QUALITY_SPACE, "fit_info": fit_info,
                   "artifacts": [], "quality": quality, "times_s": times, "status": "complete",
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(out / "record.json", record)
    log.info("SCAN stage: %s, %d points in %d clusters", key, len(labels), quality["n_clusters"])
    return out


def check_targets(cfg: DictConfig, run: RunDir) -> bool:
    """Whether this is a resume; refuses (one line) to redo a run's SCAN stage without ``scan.overwrite`` or
    ``scan.resume=last``, and a resume without a checkpoint. With ``scan.overwrite`` the old files go."""
    scan_dir = run.path / SCAN_DIR
    resume = cfg.scan.resume == "last"
    if not is_global_rank_zero():  # rank 0 checks (and may already be writing scan/)
        return resume
    if resume:
        if not (scan_dir / "checkpoints" / "scan" / "last.ckpt").is_file():
            raise SSLClusterError(f"scan.resume=last: no checkpoint {scan_dir / 'checkpoints' / 'scan' / 'last.ckpt'}"
                                  f" in run {run.key}")
        return True
    done = [k for k in scan_keys(cfg).values() if run.clustering(k).read_record().get("status") == "complete"]
    if (scan_dir.exists() or done) and not cfg.scan.overwrite:
        raise SSLClusterError(f"run {run.key} already has a SCAN stage ({scan_dir if scan_dir.exists() else done[0]});"
                              " continue it with scan.resume=last or redo it with scan.overwrite=true")
    if scan_dir.exists():
        shutil.rmtree(scan_dir)
    return False


def _mine(cfg: DictConfig, run: RunDir, checkpoint: Path, n_train: int) -> np.ndarray:
    """Step 1: the neighbours (N_train, k + 1) of the train rows on ``scan.mine_features`` of the pretrained model
    (exported now if the export stage left none); rank 0 writes ``scan/neighbors.npy`` and ``neighbors.json``."""
    s = cfg.scan
    mine_path = _embeddings(cfg, run, "train", str(s.mine_features), checkpoint)
    mine_set = Embeddings(mine_path).read(with_labels=False)
    if len(mine_set.array) != n_train:
        raise SSLClusterError(f"{mine_path} has {len(mine_set.array)} rows, the train split {n_train}")
    neighbors = mine_neighbours(np.asarray(mine_set.array, dtype=np.float32), int(s.num_neighbors))
    if is_global_rank_zero():
        write_npy(run.path / SCAN_DIR / "neighbors.npy", neighbors)
        write_json(run.path / SCAN_DIR / "neighbors.json", {
            "num_neighbors": int(s.num_neighbors), "columns": int(neighbors.shape[1]), "self_included": True,
            "metric": "cosine", "features": str(s.mine_features), "embeddings": run.store_path(mine_path),
            "ids_sha256": Embeddings(mine_path).index().ids_sha256()})
    return neighbors


def _selflabel(cfg: DictConfig, run: RunDir, model: ClusteringModel, head: int, data: WeakStrong, resume: bool,
               callbacks: list[pl.Callback] | None, assign: Callable[[], np.ndarray], clustered_emb: Path,
               info: dict[str, Any], key: str) -> Path | None:
    """Step 3: self-label ``model`` (its one kept head, ``head`` of step 2) and write its clustering ``key``
    (global rank 0; None elsewhere)."""
    sl = cfg.scan.selflabel
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = SelfLabelModule(model, lr=float(sl.lr), weight_decay=float(sl.weight_decay),
                             confidence_threshold=float(sl.confidence_threshold), class_balance=bool(sl.class_balance))
    module.settings = {**_settings(cfg, "selflabel"), "head": head}
    curve = EpochCurve()
    trainer, last = _trainer(cfg, run, "selflabel", int(sl.epochs), curve, callbacks)
    t0 = time.perf_counter()
    _fit(cfg, run, trainer, module, _loader(data, int(sl.batch_size), int(cfg.data.num_workers)), last, resume,
         "selflabel")
    times = {"train": time.perf_counter() - t0}
    if not is_global_rank_zero():
        return None
    t0 = time.perf_counter()
    labels = assign()
    times["assign"] = time.perf_counter() - t0
    info = {**info, "from_head": head, "checkpoint_selflabel": run.store_path(last), "images_per_s": _rate(curve.rows)}
    params = {k: (float(v) if isinstance(v, float) else v) for k, v in to_plain(sl).items()}
    return _write_clustering(cfg, run, key, "scan_selflabel", labels, clustered_emb, params, info, curve.rows, times)


def scan_stage(cfg: DictConfig, run: RunDir, checkpoint: Path, callbacks: list[pl.Callback] | None = None) -> list[Path]:
    """Run SCAN's three steps on the pretrained ``checkpoint`` of ``run``; the clustering folders written (global
    rank 0; the other processes of a DDP launch return an empty list after training). ``callbacks``: more
    Lightning callbacks for both training steps."""
    check_scan_config(cfg)
    _sync()  # the pipeline's export: rank 0 may still be assembling its last set
    s = cfg.scan
    train_source = build_source(cfg, "train", run.path)
    if int(s.num_neighbors) + 1 > len(train_source):
        raise SSLClusterError(f"scan.num_neighbors={s.num_neighbors}: more neighbours than the {len(train_source)} "
                              f"train images allow (at most {len(train_source) - 1})")
    resume = check_targets(cfg, run)
    keys = scan_keys(cfg)
    split = str(cfg.clustering.split)
    device = resolve_device(cfg.export.device)
    eval_tf = build(cfg.augmentation.eval)
    strong_tf = strong_transform(int(cfg.data.image_size), list(cfg.data.mean), list(cfg.data.std),
                                 **OmegaConf.to_container(s.augmentation, resolve=True))  # type: ignore[arg-type]
    workers = int(cfg.data.num_workers)
    eval_bs = int(cfg.export.batch_size)
    times: dict[str, float] = {}

    # 1. neighbours, on the pretrained model's exported train features (every process mines the same, in memory)
    t0 = time.perf_counter()
    neighbors = _mine(cfg, run, checkpoint, len(train_source))
    times["mine"] = time.perf_counter() - t0

    # 2. backbone + heads on neighbour pairs
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    backbone = load_method(checkpoint).backbone
    model = ClusteringModel(backbone, int(s.num_clusters), int(s.num_heads))
    module = SCANModule(model, lr=float(s.lr), weight_decay=float(s.weight_decay),
                        entropy_weight=float(s.entropy_weight), update_cluster_head_only=bool(s.update_cluster_head_only))
    module.settings = _settings(cfg, "scan")
    curve = EpochCurve()
    validation = _validation(cfg, curve, train_source, eval_tf, neighbors)
    trainer, last = _trainer(cfg, run, "scan", int(s.epochs), curve, [*validation, *(callbacks or [])])
    t0 = time.perf_counter()
    _fit(cfg, run, trainer, module, _loader(NeighborPairs(train_source, neighbors, strong_tf), int(s.batch_size),
                                            workers), last, resume, "scan")
    times["train"] = time.perf_counter() - t0
    scan_curve = curve.rows

    # head choice: every head's SCAN loss over the train graph, evaluation transform (labels never read)
    t0 = time.perf_counter()
    train_eval = ImageDataset(train_source, eval_tf)
    head, _, losses = choose_head(model, train_eval, neighbors, float(s.entropy_weight), eval_bs, device, workers)
    times["choose_head"] = time.perf_counter() - t0
    log.info("SCAN stage: head %d chosen (SCAN loss over the train graph %s)", head,
             ", ".join(f"{v:.4f}" for v in losses["total"]))
    model.keep_head(head)

    clustered_source = build_source(cfg, split, run.path)
    clustered_emb = _embeddings(cfg, run, split, str(cfg.clustering.features), checkpoint)

    def assign() -> np.ndarray:
        logits = all_logits(model, ImageDataset(clustered_source, eval_tf), eval_bs, device, workers)[0]
        return logits.argmax(dim=1).numpy().astype(np.int64)

    written: list[Path] = []
    params = {"num_clusters": int(s.num_clusters), "num_neighbors": int(s.num_neighbors),
              "num_heads": int(s.num_heads), "entropy_weight": float(s.entropy_weight), "epochs": int(s.epochs),
              "batch_size": int(s.batch_size), "lr": float(s.lr), "weight_decay": float(s.weight_decay),
              "update_cluster_head_only": bool(s.update_cluster_head_only), "mine_features": str(s.mine_features)}
    pretrained = {"checkpoint": run.store_path(checkpoint), "neighbors": f"{SCAN_DIR}/neighbors.npy"}
    if is_global_rank_zero():
        t0 = time.perf_counter()
        labels = assign()
        times["assign"] = time.perf_counter() - t0
        info = {**pretrained, "chosen_head": head, "head_losses": losses, "checkpoint_scan": run.store_path(last),
                "images_per_s": _rate(scan_curve)}
        written.append(_write_clustering(cfg, run, keys["scan"], "scan_backbone", labels, clustered_emb, params,
                                         info, scan_curve, dict(times)))

    # 3. self-labelling from the chosen head
    if "selflabel" in keys:
        done = _selflabel(cfg, run, model, head, WeakStrong(train_source, eval_tf, strong_tf), resume, callbacks,
                          assign, clustered_emb, pretrained, keys["selflabel"])
        written += [done] if done is not None else []
    return written


class ValidationCurve(pl.Callback):
    """Validation figures of step 2 every ``every`` epochs, added to the epoch's row of ``curve``: the head with
    the lowest SCAN loss over the train graph (as the stage chooses it, labels never read) assigns the held-aside
    validation part of train (``evaluate.validation``: the rows ``val_nmi`` uses everywhere), scored against their
    held-out labels as ``val_nmi``, ``val_ari``, ``val_acc``. Labels reach these figures only, never training or the
    head choice; the forward passes run in eval mode under a forked RNG, so a run with them trains exactly as one
    without (``tests/stages/test_scan.py``). For choosing ``scan.epochs`` on validation data."""

    def __init__(self, every: int, curve: EpochCurve, dataset: Any, neighbors: np.ndarray, rows: np.ndarray,
                 labels: np.ndarray, entropy_weight: float, batch_size: int) -> None:
        self.every, self.curve, self.dataset, self.neighbors = every, curve, dataset, neighbors
        self.rows, self.labels, self.entropy_weight, self.batch_size = rows, labels, entropy_weight, batch_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the epoch (every ``every`` epochs and the last) on rank 0."""
        epoch = trainer.current_epoch + 1
        if not trainer.is_global_zero or (epoch % self.every and epoch != trainer.max_epochs):
            return
        model = pl_module.model  # type: ignore[attr-defined]
        with torch.random.fork_rng(devices=[]):
            head, logits, _ = choose_head(model, self.dataset, self.neighbors, self.entropy_weight, self.batch_size,
                                          pl_module.device)
        model.train()
        scores = external_metrics(self.labels[self.rows], logits[head, self.rows].argmax(dim=1).numpy())
        row = self.curve.rows[-1] if self.curve.rows and self.curve.rows[-1]["epoch"] == epoch else None
        if row is not None:
            row.update({f"val_{k}": scores[k] for k in ("nmi", "ari", "acc")})
        log.info("SCAN stage epoch %d: val_nmi %.4f val_acc %.4f (head %d)", epoch, scores["nmi"], scores["acc"], head)


def _validation(cfg: DictConfig, curve: EpochCurve, train_source: Any, eval_tf: Callable, neighbors: np.ndarray
                ) -> list[pl.Callback]:
    """The :class:`ValidationCurve` of step 2 where ``scan.validation_every`` asks for it and train has labels."""
    every = int(cfg.scan.get("validation_every", 0))
    vcfg = cfg.evaluate.get("validation") or {}
    fraction = float(vcfg.get("fraction", 0) or 0)
    labels = train_source.labels
    if every <= 0:
        return []
    if labels is None or not (labels >= 0).any() or fraction <= 0:
        log.warning("scan.validation_every=%d: no validation figures (the train split has no labels, or "
                    "evaluate.validation.fraction is 0)", every)
        return []
    rows = validation_rows(labels, fraction, int(vcfg.get("seed", 0)))
    return [ValidationCurve(every, curve, ImageDataset(train_source, eval_tf), neighbors, rows, labels,
                            float(cfg.scan.entropy_weight), int(cfg.export.batch_size))]


def _rate(rows: list[dict[str, Any]]) -> float | None:
    """Images per second over the curve's epochs (None without any)."""
    seconds = sum(float(r["seconds"]) for r in rows)
    return sum(int(r["images"]) for r in rows) / seconds if seconds > 0 else None
