"""The embeddings folder ``embeddings/<name>/``: array, index and manifest.

- ``embeddings.npy``: float32 or float16, shape (N, D), memory-mappable.
- ``index.csv``: row i of the array: ``id,path,label`` (label empty when unknown). Held-out labels live only here,
  and :func:`read_embeddings` parses them only when asked (``with_labels=True``): clustering never asks.
- ``manifest.json``: count, dim, dtype, features, checkpoint sha256, class names, ``status``.

The manifest is written last; a folder whose manifest is missing or not ``complete`` is not an embeddings set.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.tracking.io import read_json, write_csv, write_json, write_npy

ARRAY = "embeddings.npy"
INDEX = "index.csv"
MANIFEST = "manifest.json"


@dataclass
class EmbeddingIndex:
    """Per-row metadata of an embeddings array. ``labels`` is None unless read with labels."""

    ids: list[str]
    paths: list[str]
    labels: np.ndarray | None = None  # int64, shape (N,), -1 where unknown
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def ids_sha256(self) -> str:
        return ids_digest(self.ids)


def ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class EmbeddingSet:
    array: np.ndarray
    index: EmbeddingIndex
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def write_embeddings(folder: str | Path, array: np.ndarray, index: EmbeddingIndex, **manifest: Any) -> Path:
    """Write array, index and (last) manifest atomically into ``folder``."""
    folder = Path(folder)
    if array.ndim != 2:
        raise SSLClusterError(f"embeddings must be 2-D (N, D), got shape {array.shape}")
    if len(index) != array.shape[0]:
        raise SSLClusterError(f"{len(index)} index rows for {array.shape[0]} embeddings in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # the set is incomplete until the manifest is rewritten
    write_npy(folder / ARRAY, array)
    labels = index.labels if index.labels is not None else np.full(len(index), -1, dtype=np.int64)
    rows = [(i, p, "" if int(lab) < 0 else int(lab)) for i, p, lab in zip(index.ids, index.paths, labels)]
    write_csv(folder / INDEX, ("id", "path", "label"), rows)
    info = {
        "count": int(array.shape[0]),
        "dim": int(array.shape[1]),
        "dtype": str(array.dtype),
        "ids_sha256": index.ids_sha256(),
        "classes": index.classes,
        **manifest,
        "status": "complete",
    }
    write_json(folder / MANIFEST, info)
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise SSLClusterError(f"embeddings folder not found: {folder}")
    if not mpath.exists():
        raise SSLClusterError(f"{folder} is not a complete embeddings set: {MANIFEST} is missing")
    manifest = read_json(mpath)
    if manifest.get("status") != "complete":
        raise SSLClusterError(f"{mpath}: status is {manifest.get('status')!r}, not 'complete'")
    return manifest


def read_index(folder: str | Path, with_labels: bool = False) -> EmbeddingIndex:
    folder = Path(folder)
    path = folder / INDEX
    if not path.exists():
        raise SSLClusterError(f"index file missing: {path}")
    ids: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[:2] != ["id", "path"]:
            raise SSLClusterError(f"{path}: expected header 'id,path,label', got {header}")
        for row in reader:
            ids.append(row[0])
            paths.append(row[1])
            if with_labels:
                cell = row[2] if len(row) > 2 else ""
                try:
                    labels.append(int(cell) if cell != "" else -1)
                except ValueError:
                    raise SSLClusterError(f"{path}: label {cell!r} of id {row[0]!r} is not an integer") from None
    classes = None
    if (folder / MANIFEST).exists():
        classes = read_json(folder / MANIFEST).get("classes")
    return EmbeddingIndex(ids, paths, np.asarray(labels, dtype=np.int64) if with_labels else None, classes)


def read_embeddings(folder: str | Path, with_labels: bool = False, mmap: bool = True) -> EmbeddingSet:
    """Read and validate an embeddings set. Labels are parsed only when ``with_labels`` is true."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    apath = folder / ARRAY
    if not apath.exists():
        raise SSLClusterError(f"embeddings array missing: {apath}")
    try:
        array = np.load(apath, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError, OSError) as e:  # EOFError: an empty (0-byte) file
        raise SSLClusterError(f"{apath}: not a readable .npy array ({e})") from None
    if array.ndim != 2 or array.shape[0] == 0:
        raise SSLClusterError(f"{apath}: expected a non-empty (N, D) array, got shape {array.shape}")
    index = read_index(folder, with_labels=with_labels)
    if len(index) != array.shape[0]:
        raise SSLClusterError(f"{folder}: {INDEX} has {len(index)} rows but {ARRAY} has {array.shape[0]}")
    if manifest.get("ids_sha256") and manifest["ids_sha256"] != index.ids_sha256():
        raise SSLClusterError(f"{folder}: ids in {INDEX} do not match the manifest's ids_sha256")
    return EmbeddingSet(array, index, manifest, folder)
