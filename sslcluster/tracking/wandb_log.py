"""After evaluation: the run's results into W&B (``logger=wandb``), on rank zero only.

What the post-evaluation hook logs, into the W&B run that received the training curves when pretraining ran in the
same process (the ``WandbLogger``'s ``experiment``), else into a new W&B run of the same project, group and name
with ``job_type=evaluate`` (e.g. ``checkpoint=...`` or ``embeddings=...`` runs):

- every number of ``metrics.json`` as a summary value (``nmi``, ``knn_top1``, ``pixels_nmi``, ...);
- every picture ``clusters/<key>/plots/*.png`` as ``plots/<key>/<name>``;
- per clustering, a ``wandb.Table`` ``clusters/<key>``: one row per cluster with its size, a strip of sample images
  (from ``index.csv`` through :func:`sslcluster.data.resolve.load_image`), its name and description when
  ``names.json`` exists, the majority held-out label and the purity against held-out labels;
- per clustering (learned and pixel baseline), a ``wandb.Table`` ``embeddings/<key>`` of the clustered embeddings
  (``emb_0..emb_{D-1}``, cluster, name, held-out label, thumbnail; at most ``logger.max_embedding_rows``, a seeded
  sample) for W&B's 2-D projection panel.

The run is then finished; in offline mode the folder to upload is printed (``wandb sync <folder>``).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from sslcluster.distributed import is_global_rank_zero
from sslcluster.data.resolve import load_image
from sslcluster.errors import SSLClusterError
from sslcluster.naming import read_names
from sslcluster.store.clusters import Clustering, clusterings
from sslcluster.tracking.loggers import build_logger, finish_wandb, wandb_init_kwargs, wandb_mode

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("cluster", "size", "samples", "name", "description", "majority_label", "purity")


# -- per-cluster rows (no W&B needed) ------------------------------------------------------------------------

@dataclass
class ClusterRow:
    """One cluster of a clustering: its members' count, a few sample paths, its name, purity against labels."""

    cluster: int
    size: int
    sample_paths: list[str] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    majority_label: str | None = None
    purity: float | None = None


def _read_names(cluster_dir: Path) -> dict[str, dict[str, Any]]:
    """``names.json`` through the naming module's reader (its schema, and only names made for these labels)."""
    try:
        return {str(k): v for k, v in read_names(cluster_dir).items()}
    except SSLClusterError as e:
        log.warning("ignoring %s", e)
        return {}


def cluster_rows(cluster_dir: str | Path, labels_csv: str | None = None, samples: int = 8,
                 seed: int = 0) -> list[ClusterRow]:
    """One :class:`ClusterRow` per cluster id of ``cluster_dir/labels.npy`` (noise, -1, last), largest first."""
    cluster_dir = Path(cluster_dir)
    clustering = Clustering(cluster_dir)
    record, pred = clustering.load()
    index = clustering.index(record, pred)
    truth = clustering.held_out_labels(index, labels_csv)
    classes = index.classes or []
    names = _read_names(cluster_dir)
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(pred, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (ids[i] < 0, -counts[i], ids[i]))
    rows = []
    for i in order:
        cid = int(ids[i])
        members = np.flatnonzero(pred == cid)
        pick = rng.choice(members, size=min(samples, len(members)), replace=False) if samples > 0 else []
        row = ClusterRow(cluster=cid, size=int(counts[i]), sample_paths=[index.paths[j] for j in sorted(pick)])
        known = truth[members][truth[members] >= 0] if truth is not None else np.empty(0, dtype=np.int64)
        if len(known):
            label, n = Counter(known.tolist()).most_common(1)[0]
            row.purity = n / len(known)
            row.majority_label = classes[label] if 0 <= label < len(classes) else str(label)
        info = names.get(str(cid), {})
        row.name, row.description = info.get("name"), info.get("description")
        rows.append(row)
    return rows


def sample_strip(paths: list[str], side: int = 48, torchvision_root: str | None = None):
    """The images of ``paths`` side by side (RGB, ``side`` pixels high); None when none could be read."""
    tiles = []
    for p in paths:
        try:
            img = load_image(p, torchvision_root=torchvision_root).convert("RGB")
        except SSLClusterError as e:
            log.debug("sample image skipped: %s", e)
            continue
        resample = Image.Resampling.NEAREST if max(img.size) < side else Image.Resampling.BILINEAR
        tiles.append(img.resize((side, side), resample))
    if not tiles:
        return None
    strip = Image.new("RGB", (side * len(tiles) + 2 * (len(tiles) - 1), side), (255, 255, 255))
    for i, t in enumerate(tiles):
        strip.paste(t, (i * (side + 2), 0))
    return strip


def embedding_rows(cluster_dir: str | Path, max_rows: int, seed: int = 0, labels_csv: str | None = None
                   ) -> tuple[list[str], list[list[Any]], list[str]]:
    """The clustered embeddings of ``cluster_dir`` as rows for W&B's 2-D projection panel: ``(columns, rows,
    image paths)``; columns ``emb_0..emb_{D-1}``, ``cluster``, ``name``, ``label``; at most ``max_rows`` rows,
    a seeded random sample (sorted by row) when there are more."""
    clustering = Clustering(cluster_dir)
    record, pred = clustering.load()
    es = clustering.read_embeddings(record, pred, with_labels=True)
    n, d = es.array.shape
    rows_idx = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows,
                                                                                              replace=False))
    truth = clustering.held_out_labels(es.index, labels_csv)
    classes = es.index.classes or []
    names = _read_names(Path(cluster_dir))
    x = np.asarray(es.array[rows_idx], dtype=np.float64)
    rows = []
    for j, i in enumerate(rows_idx):
        k = int(truth[i]) if truth is not None else -1
        label = (classes[k] if 0 <= k < len(classes) else str(k)) if k >= 0 else None
        rows.append([*x[j].tolist(), int(pred[i]), (names.get(str(int(pred[i]))) or {}).get("name"), label])
    columns = [*(f"emb_{c}" for c in range(d)), "cluster", "name", "label"]
    return columns, rows, [es.index.paths[i] for i in rows_idx]


def embeddings_table(cluster_dir: Path, max_rows: int, seed: int, labels_csv: str | None,
                     torchvision_root: str | None, thumb: int = 32) -> Any:
    """A ``wandb.Table`` of :func:`embedding_rows` with a ``thumbnail`` image column: W&B's 2-D projection
    panel (PCA, UMAP, t-SNE) of ``emb_*`` coloured by ``cluster`` or ``label`` shows the representation."""
    import wandb
    from PIL import Image

    from sslcluster.data.resolve import load_image

    columns, rows, paths = embedding_rows(cluster_dir, max_rows, seed, labels_csv)
    table = wandb.Table(columns=[*columns, "thumbnail"])
    for row, p in zip(rows, paths):
        try:
            img = load_image(p, torchvision_root=torchvision_root).convert("RGB")
            img = img.resize((thumb, thumb), Image.Resampling.NEAREST if max(img.size) < thumb
                             else Image.Resampling.BILINEAR)
            picture = wandb.Image(img)
        except SSLClusterError:
            picture = None
        table.add_data(*row, picture)
    return table


# -- the hook --------------------------------------------------------------------------------------------------

def offline_run_dir(experiment: Any) -> Path | None:
    """The offline run folder of a W&B run (the one ``wandb sync`` takes), None when the run is online."""
    settings = getattr(experiment, "settings", None)
    if getattr(settings, "mode", None) not in ("offline", "dryrun"):
        return None
    sync_dir = getattr(settings, "sync_dir", None)
    return Path(sync_dir) if sync_dir else Path(experiment.dir).parent


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """The W&B side of one pipeline run; a no-op unless ``logger=wandb`` and rank zero."""

    def __init__(self, cfg: DictConfig, run: Any) -> None:
        self.cfg = cfg
        self.run = run
        self.enabled = cfg.logger.name == "wandb" and is_global_rank_zero()
        if self.enabled:
            wandb_mode(cfg)  # a bad mode is reported before any work starts
        self.offline_dir: Path | None = None
        self._logger: Any | None = None  # the pretraining logger this tracker built (training_logger)
        self._own: Any | None = None  # a W&B run this tracker started (no training in this process)

    def training_logger(self) -> Any:
        """The Lightning logger of ``cfg.logger`` for pretraining (every rank; False for ``logger=none``). Built
        once; with ``logger=wandb`` its W&B run receives the post-evaluation results too."""
        if self._logger is None:
            self._logger = build_logger(self.cfg, self.run)
        return self._logger

    def _experiment(self) -> Any:
        if self._logger is not None and self.cfg.logger.name == "wandb":
            return self._logger.experiment  # the run that received the training curves
        import wandb

        self._own = wandb.init(**wandb_init_kwargs(self.cfg, Path(self.run.path), self.run.key,
                                                   job_type="evaluate"))
        return self._own

    def log_final(self, metrics: dict[str, Any]) -> Path | None:
        """Summary metrics, pictures and per-cluster tables into W&B, then finish the run; the offline folder.
        A W&B failure here is a warning: the run directory already holds every result."""
        if not self.enabled:
            return None
        try:
            return self._log_final(metrics)
        except SSLClusterError:
            self.close(1)
            raise
        except Exception as e:  # W&B's own errors must not fail a finished run
            log.warning("W&B logging after evaluation failed (%s: %s); the results are in %s",
                        type(e).__name__, e, self.run.path)
            self.close(1)
            return None

    def _log_final(self, metrics: dict[str, Any]) -> Path | None:
        import wandb

        exp = self._experiment()
        exp.summary.update(_numbers(metrics))
        payload: dict[str, Any] = {}
        for png in sorted(Path(self.run.path).glob("clusters/*/plots/*.png")):
            payload[f"plots/{png.parent.parent.name}/{png.stem}"] = wandb.Image(str(png))
        lc = self.cfg.logger
        if lc.get("log_tables", True):
            tv_root = self.cfg.data.source.get("root") if "source" in self.cfg.data else None
            for clustering in clusterings(self.run.path):
                cdir = clustering.path
                root = clustering.data_root(str(tv_root) if tv_root else None)
                try:
                    rows = cluster_rows(cdir, self.cfg.evaluate.get("labels"),
                                        samples=int(lc.get("samples_per_cluster", 8)), seed=int(self.cfg.seed))
                except SSLClusterError as e:
                    log.warning("no W&B table for %s: %s", cdir.name, e)
                    continue
                table = wandb.Table(columns=list(TABLE_COLUMNS))
                for r in rows[: int(lc.get("max_table_rows", 200))]:
                    strip = sample_strip(r.sample_paths, torchvision_root=root)
                    table.add_data(r.cluster, r.size, wandb.Image(strip) if strip is not None else None, r.name,
                                   r.description, r.majority_label, r.purity)
                payload[f"clusters/{cdir.name}"] = table
        for curve in sorted(Path(self.run.path).glob("clusters/*/curve.csv")):  # the learned heads' training
            with open(curve, newline="") as f:
                lines = list(csv.reader(f))
            if len(lines) > 1:
                payload[f"curves/{curve.parent.name}"] = wandb.Table(columns=lines[0], data=lines[1:])
        if int(lc.get("max_embedding_rows", 0) or 0) > 0:
            tv_root = self.cfg.data.source.get("root") if "source" in self.cfg.data else None
            for cdir in sorted(p.parent for p in Path(self.run.path).glob("clusters/*/record.json")):
                try:
                    payload[f"embeddings/{cdir.name}"] = embeddings_table(
                        cdir, int(lc.max_embedding_rows), int(self.cfg.seed), self.cfg.evaluate.get("labels"),
                        str(tv_root) if tv_root else None)
                except SSLClusterError as e:
                    log.warning("no W&B embeddings table for %s: %s", cdir.name, e)
        if payload:
            exp.log(payload)
        self.offline_dir = offline_run_dir(exp)
        self.close(0)
        return self.offline_dir

    def close(self, exit_code: int = 0) -> None:
        """Finish the W&B run of this pipeline run (idempotent); say where offline files are and how to sync."""
        if not self.enabled:
            return
        started = getattr(self._logger, "_experiment", None)  # WandbLogger's run, once it exists
        if self.offline_dir is None and started is not None:
            self.offline_dir = offline_run_dir(started)
        finish_wandb(self._logger, exit_code=exit_code)
        if self._own is not None:
            self._own.finish(exit_code=exit_code)
            self._own = None
        if self.offline_dir is not None and exit_code == 0:
            print(f"W&B offline run: {self.offline_dir}\n  upload it with: wandb sync {self.offline_dir}")
        self.enabled = False


@contextmanager
def tracking_session(cfg: DictConfig, run: Any) -> Iterator[Tracker]:
    """A :class:`Tracker` for the pipeline body; a failure finishes the W&B run with exit code 1."""
    tracker = Tracker(cfg, run)
    try:
        yield tracker
    except BaseException:
        tracker.close(exit_code=1)
        raise
    tracker.close(0)
