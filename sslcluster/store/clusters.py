"""A clustering folder ``clusters/<key>/`` of a run, as the cluster stage writes it and later stages read it.

``record.json`` (what was clustered and how; ``status`` complete only once ``labels.npy`` is on disk),
``labels.npy`` (N,) int64 with -1 for noise, the arrays the algorithm declared (``<name>.npy``), and what later
stages add: ``metrics.json``, ``names.json``, ``plots/``. :class:`Clustering` is the one reader every stage,
naming and W&B use: it resolves the embeddings the clustering was made from (stored relative to the run), checks
that they are the same rows, and resolves the held-out labels.

Records of runs made before they named their ``representation`` and whether the clustering is the ``primary`` one
of that representation (the one the run's ``metrics.json`` summarises) get both filled in when read
(:meth:`Clustering.read_record`, :meth:`Clustering.record`), as those versions decided them: a clustering of raw
pixels (key ``pixels-...``, or pixel features) is the ``pixels`` representation, any other ``learned``; the
primary one is the clustering the run's own ``config.yaml`` made (``clustering.key``, else
``<algorithm>-<split>``, after the representation's key prefix).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.store.embeddings import EmbeddingIndex, Embeddings, EmbeddingSet
from sslcluster.store.io import atomic_path, csv_unescape, read_json
from sslcluster.store.representations import LEARNED, PIXELS, key_prefix
from sslcluster.store.runconfig import own_cluster_key, read_run_config

RECORD = "record.json"
LABELS = "labels.npy"
#: the 2-D projection evaluation drew (``projection_<method>.npz``: ``rows`` (R,) int64 positions among the
#: clustering's rows, ``xy`` (R, 2) float32)
PROJECTION = "projection_{}.npz"


class Clustering:
    """One clustering of a run, ``<run>/clusters/<key>/``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def key(self) -> str:
        """The clustering's key (its folder name)."""
        return self.path.name

    @property
    def run_path(self) -> Path:
        """The run folder the clustering belongs to."""
        return self.path.parent.parent

    @property
    def record_path(self) -> Path:
        """``record.json``."""
        return self.path / RECORD

    @property
    def labels_path(self) -> Path:
        """``labels.npy``."""
        return self.path / LABELS

    @property
    def metrics_path(self) -> Path:
        """``metrics.json`` (written by evaluation)."""
        return self.path / "metrics.json"

    @property
    def plots_dir(self) -> Path:
        """``plots/`` (written by evaluation)."""
        return self.path / "plots"

    def exists(self) -> bool:
        """Whether the cluster stage started it (a ``record.json`` is there, complete or not)."""
        return self.record_path.is_file()

    def read_record(self) -> dict[str, Any]:
        """``record.json`` whatever its status (``representation`` and ``primary`` filled in for older runs);
        empty when there is none."""
        return self._with_representation(read_json(self.record_path)) if self.record_path.is_file() else {}

    def record(self) -> dict[str, Any]:
        """``record.json`` of a complete clustering (``representation`` and ``primary`` filled in for older runs),
        or a one-line error."""
        if not self.record_path.is_file():
            raise SSLClusterError(f"no clustering at {self.path} ({RECORD} missing); run the cluster stage first")
        record = read_json(self.record_path)
        if record.get("status") != "complete":
            raise SSLClusterError(f"{self.record_path}: status is {record.get('status')!r}, not 'complete'")
        return self._with_representation(record)

    def _with_representation(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with ``representation`` and ``primary`` as older versions, which did not record them,
        decided them (see the module's description); a record that has them is returned as it is."""
        if "representation" in record and "primary" in record:
            return record
        record = dict(record)
        record.setdefault("representation", self._legacy_representation(record))
        if "primary" not in record:
            record["primary"] = self._legacy_primary(str(record["representation"]))
        return record

    def _legacy_representation(self, record: dict[str, Any]) -> str:
        """``pixels`` for a clustering of raw pixels (``pixels-`` key, or pixel features), else ``learned``: the
        representations of runs made before records named them."""
        if record.get("representation"):
            return str(record["representation"])
        return PIXELS if self.key.startswith(key_prefix(PIXELS)) or record.get("features") == "pixels" else LEARNED

    def _legacy_primary(self, representation: str) -> bool:
        """Whether this clustering is the one the run made itself: its key is the run config's cluster key after
        the representation's prefix. A run without a (readable) config: the only clustering of its
        representation."""
        own = own_cluster_key(read_run_config(self.run_path))
        if own is not None:
            return self.key == key_prefix(representation) + own
        same = [c for c in clusterings(self.run_path) if c._legacy_representation(read_json(c.record_path))
                == representation]
        return [c.key for c in same] == [self.key]

    def labels(self) -> np.ndarray:
        """The cluster labels (N,) int64, -1 for noise."""
        if not self.labels_path.is_file():
            raise SSLClusterError(f"{self.labels_path} is missing")
        labels = np.load(self.labels_path)
        if labels.ndim != 1:
            raise SSLClusterError(f"{self.labels_path}: expected a 1-D array of labels, got shape {labels.shape}")
        return labels

    def projection_path(self, method: str) -> Path:
        """``projection_<method>.npz`` (written by evaluation with its scatter plot)."""
        return self.path / PROJECTION.format(method)

    def write_projection(self, method: str, rows: np.ndarray, xy: np.ndarray) -> Path:
        """Keep the 2-D points ``xy`` (R, 2) of the clustering's rows ``rows`` (R,) that a ``method`` projection
        (umap, pca, tsne) placed, so other views of the run (the FiftyOne App) show the same picture."""
        rows = np.asarray(rows, dtype=np.int64)
        xy = np.asarray(xy, dtype=np.float32)
        if xy.shape != (len(rows), 2):
            raise SSLClusterError(f"{self.path}: {len(rows)} rows but points of shape {xy.shape}")
        path = self.projection_path(method)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, rows=rows, xy=xy)
        return path

    def projection(self, method: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(rows (R,) int64, xy (R, 2) float32)`` of the ``method`` projection evaluation kept, or None."""
        path = self.projection_path(method)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                rows, xy = np.asarray(z["rows"], dtype=np.int64), np.asarray(z["xy"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise SSLClusterError(f"{path}: not a readable projection file ({e})") from None
        if xy.shape != (len(rows), 2):
            raise SSLClusterError(f"{path}: {len(rows)} rows but points of shape {xy.shape}")
        return rows, xy

    def load(self) -> tuple[dict[str, Any], np.ndarray]:
        """``(record, labels)`` of a complete clustering."""
        return self.record(), self.labels()

    def embeddings(self, record: dict[str, Any] | None = None) -> Embeddings:
        """The embeddings set the clustering was made from (a path relative to the run, or absolute)."""
        stored = (record or self.record())["embeddings"]
        p = Path(stored).expanduser()
        return Embeddings(p if p.is_absolute() else self.run_path / p)

    def _check_rows(self, record: dict[str, Any], index: EmbeddingIndex, n_labels: int, where: Path) -> None:
        if (record.get("ids_sha256") and index.ids_sha256() != record["ids_sha256"]) or len(index) != n_labels:
            raise SSLClusterError(f"{self.path}: its {LABELS} ({n_labels} rows) does not match the ids of "
                                  f"{where} ({len(index)} rows)")

    def index(self, record: dict[str, Any] | None = None, labels: np.ndarray | None = None,
              with_labels: bool = True) -> EmbeddingIndex:
        """The index (ids, paths, classes, labels) of the clustered rows, checked to be the clustered rows."""
        record = record if record is not None else self.record()
        labels = labels if labels is not None else self.labels()
        emb = self.embeddings(record)
        index = emb.index(with_labels=with_labels)
        self._check_rows(record, index, len(labels), emb.path)
        return index

    def read_embeddings(self, record: dict[str, Any] | None = None, labels: np.ndarray | None = None,
                        with_labels: bool = False) -> EmbeddingSet:
        """The clustered embeddings (N, D) with their index, checked to be the clustered rows."""
        record = record if record is not None else self.record()
        labels = labels if labels is not None else self.labels()
        emb = self.embeddings(record)
        es = emb.read(with_labels=with_labels)
        self._check_rows(record, es.index, len(labels), emb.path)
        return es

    def held_out_labels(self, index: EmbeddingIndex, labels_csv: str | os.PathLike | None = None) -> np.ndarray:
        """The held-out labels (N,) int64 (-1 unknown) of ``index``'s rows: from a CSV of ``id,label`` when
        given, else the embeddings' own ``index.csv``."""
        if labels_csv:
            return labels_from_csv(labels_csv, index.ids)
        if index.labels is None:
            raise SSLClusterError(f"{self.path}: the index was read without labels")
        return index.labels

    def artifacts(self, record: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """The arrays the algorithm declared (``record['artifacts']``), read from ``<name>.npy``."""
        record = record if record is not None else self.record()
        out = {}
        for name in record.get("artifacts") or []:
            path = self.path / f"{name}.npy"
            if not path.is_file():
                raise SSLClusterError(f"{self.record_path} declares the array {name!r} but {path} is missing")
            out[name] = np.load(path)
        return out

    def data_root(self, fallback: str | None = None) -> str | None:
        """The data set root (for ``torchvision:`` index paths): the run's own ``config.yaml`` first, else
        ``fallback``."""
        try:
            root = (read_run_config(self.run_path).get("data") or {}).get("source", {}).get("root")
            if root:
                return str(root)
        except AttributeError:  # a config of another shape
            pass
        return str(fallback) if fallback else None


def clusterings(run_path: str | os.PathLike) -> list[Clustering]:
    """The clusterings of a run that have a ``record.json`` (complete or not), by key."""
    return [Clustering(p.parent) for p in sorted(Path(run_path).glob(f"clusters/*/{RECORD}"))]


def load_clustering(cluster_dir: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(record, labels)`` of a complete clustering; labels are int64, shape (N,), -1 for noise."""
    return Clustering(cluster_dir).load()


def labels_from_csv(path: str | os.PathLike, ids: list[str]) -> np.ndarray:
    """Labels (N,) int64 for ``ids`` from a CSV with columns id,label; every id must be present."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SSLClusterError(f"labels file not found: {path}")
    table: dict[str, int] = {}
    n_rows = 0
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise SSLClusterError(f"{path}: expected columns id,label, got {reader.fieldnames}")
        for row in reader:
            n_rows += 1
            try:  # ids as index.csv writes them (csv_escape): the same id whatever its file name's bytes
                table[csv_unescape(row["id"] or "")] = int(row["label"]) if row["label"] not in ("", None) else -1
            except ValueError:
                raise SSLClusterError(f"{path}: label {row['label']!r} of id {row['id']!r} is not an integer") from None
    missing = [i for i in ids if i not in table]
    if missing:
        raise SSLClusterError(f"{path}: {len(missing)} of {len(ids)} embedding ids have no label "
                              f"(first: {missing[:3]}); the labels file does not match the embeddings")
    if n_rows != len(ids) or len(table) != len(ids):
        raise SSLClusterError(f"{path}: {n_rows} label rows ({len(table)} distinct ids) for {len(ids)} embeddings; "
                              "the labels file does not match the embeddings")
    return np.asarray([table[i] for i in ids], dtype=np.int64)
