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
:func:`read_offline_run` reads an offline run's ``.wandb`` file back (config, summary, history keys) without W&B's
servers, for tests and for checking what a run holds before syncing it.
"""

from __future__ import annotations

import json
import logging
import struct
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from omegaconf import DictConfig

from sslcluster.errors import SSLClusterError
from sslcluster.tracking.loggers import finish_wandb, wandb_init_kwargs, wandb_logger_for, wandb_mode

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
    from sslcluster.naming import read_names

    try:
        return {str(k): v for k, v in read_names(cluster_dir).items()}
    except SSLClusterError as e:
        log.warning("ignoring %s", e)
        return {}


def cluster_rows(cluster_dir: str | Path, labels_csv: str | None = None, samples: int = 8,
                 seed: int = 0) -> list[ClusterRow]:
    """One :class:`ClusterRow` per cluster id of ``cluster_dir/labels.npy`` (noise, -1, last), largest first."""
    from sslcluster.stages.evaluate import labels_from_csv
    from sslcluster.tracking.clusters import load_clustering
    from sslcluster.tracking.embeddings import read_index

    cluster_dir = Path(cluster_dir)
    record, pred = load_clustering(cluster_dir)
    index = read_index(record["embeddings"], with_labels=True)
    if len(index) != len(pred):
        raise SSLClusterError(f"{cluster_dir}: labels.npy has {len(pred)} rows but {record['embeddings']}"
                              f"/index.csv has {len(index)}")
    truth = labels_from_csv(labels_csv, index.ids) if labels_csv else index.labels
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
    from PIL import Image

    from sslcluster.data.resolve import load_image

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
    from sslcluster.stages.evaluate import labels_from_csv
    from sslcluster.tracking.clusters import load_clustering
    from sslcluster.tracking.embeddings import read_embeddings

    record, pred = load_clustering(cluster_dir)
    es = read_embeddings(record["embeddings"], with_labels=True)
    if len(es.index) != len(pred):
        raise SSLClusterError(f"{cluster_dir}: labels.npy has {len(pred)} rows but {record['embeddings']} has "
                              f"{len(es.index)}")
    n, d = es.array.shape
    rows_idx = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows,
                                                                                              replace=False))
    truth = labels_from_csv(labels_csv, es.index.ids) if labels_csv else es.index.labels
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

def is_rank_zero() -> bool:
    """Whether this process is global rank zero (Lightning's view: set by the strategy, else the env vars)."""
    from pytorch_lightning.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


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
        self.enabled = cfg.logger.name == "wandb" and is_rank_zero()
        if self.enabled:
            wandb_mode(cfg)  # a bad mode is reported before any work starts
        self.offline_dir: Path | None = None
        self._own: Any | None = None  # a W&B run this tracker started (no training in this process)

    def _experiment(self) -> Any:
        logger = wandb_logger_for(self.run.path)
        if logger is not None:
            return logger.experiment  # the run that received the training curves
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
            for cdir in sorted(p.parent for p in Path(self.run.path).glob("clusters/*/record.json")):
                try:
                    rows = cluster_rows(cdir, self.cfg.evaluate.get("labels"),
                                        samples=int(lc.get("samples_per_cluster", 8)), seed=int(self.cfg.seed))
                except SSLClusterError as e:
                    log.warning("no W&B table for %s: %s", cdir.name, e)
                    continue
                table = wandb.Table(columns=list(TABLE_COLUMNS))
                for r in rows[: int(lc.get("max_table_rows", 200))]:
                    strip = sample_strip(r.sample_paths, torchvision_root=str(tv_root) if tv_root else None)
                    table.add_data(r.cluster, r.size, wandb.Image(strip) if strip is not None else None, r.name,
                                   r.description, r.majority_label, r.purity)
                payload[f"clusters/{cdir.name}"] = table
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
        logger = wandb_logger_for(self.run.path)
        if self.offline_dir is None and getattr(logger, "_experiment", None) is not None:
            self.offline_dir = offline_run_dir(logger._experiment)
        finish_wandb(Path(self.run.path), exit_code=exit_code)
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


# -- reading an offline run back -----------------------------------------------------------------------------

_BLOCK = 32768
_HEADER = 7


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file (W&B's LevelDB-style log: 7-byte header, 32 KiB blocks, chunked records)."""
    data = path.read_bytes()
    if len(data) < _HEADER:  # nothing written yet
        return
    if data[:4] != b":W&B":
        raise SSLClusterError(f"{path} is not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _set_nested(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def read_offline_run(folder: str | Path, wait_s: float = 0.0) -> dict[str, Any]:
    """What an offline W&B run folder holds: ``project``, ``group``, ``name``, ``job_type``, ``tags``, ``config``,
    ``summary`` (latest values, nested keys as dicts), ``history_keys``, ``artifacts`` (name, type, entries: path
    in the artifact -> staged local file; a logged table's images are there), ``files`` (under ``files/``) and
    ``complete`` (the run's exit record is on disk). W&B's service writes the file in blocks, possibly after
    ``finish()`` returned: ``wait_s`` polls that long for the exit record."""
    import time

    folder = Path(folder)
    deadline = time.monotonic() + wait_s
    while True:
        out = _parse_offline_run(folder)
        if out["complete"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.2)


def _parse_offline_run(folder: Path) -> dict[str, Any]:
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(folder.glob("run-*.wandb"))
    if not files:
        raise SSLClusterError(f"no run-*.wandb file in {folder}")
    out: dict[str, Any] = {"project": None, "group": None, "name": None, "job_type": None, "tags": [],
                           "config": {}, "summary": {}, "history_keys": set(), "artifacts": [], "complete": False}
    for data in _wandb_records(files[0]):
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError:  # a record still being written
            break
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(project=r.project, group=r.run_group, name=r.display_name, job_type=r.job_type,
                       tags=list(r.tags))
            for item in r.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                _set_nested(out["config"], list(item.nested_key) or [item.key], json.loads(item.value_json))
        elif kind == "summary":
            for item in rec.summary.update:
                _set_nested(out["summary"], list(item.nested_key) or [item.key], json.loads(item.value_json))
        elif kind == "history":
            for item in rec.history.item:
                out["history_keys"].add(item.nested_key[0] if item.nested_key else item.key)
        elif kind == "artifact":  # a logged table's artifact (W&B stages its files until `wandb sync`)
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type,
                                     "entries": {c.path: c.local_path for c in a.manifest.contents}})
        elif kind == "exit":
            out["complete"] = True
    out["config"].pop("_wandb", None)
    files_dir = folder / "files"
    out["files"] = sorted(str(p.relative_to(files_dir)) for p in files_dir.rglob("*") if p.is_file())
    return out


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run folders inside a run directory (``<run>/wandb/offline-run-*``), oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*"))
