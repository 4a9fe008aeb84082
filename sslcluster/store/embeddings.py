"""The embeddings folder ``embeddings/<name>/``: array, index and manifest.

- ``embeddings.npy``: float32 or float16, shape (N, D), memory-mappable.
- ``index.csv``: row i of the array: ``id,path,label`` (label empty when unknown). Held-out labels live only here,
  and :func:`read_embeddings` parses them only when asked (``with_labels=True``): clustering never asks.
- ``manifest.json``: count, dim, dtype, features, checkpoint sha256, class names, ``status``.

The manifest is written last; a folder whose manifest is missing or not ``complete`` is not an embeddings set.

Large exports go through :class:`ShardedWriter`: the manifest is first written with ``status: running``, rows
are computed in shards of ``shard_size`` saved atomically as ``shards/00000.npy``, ``shards/00001.npy``, ... (each
with ``rows_<k>.npy``, the row positions it holds) next to a ``shards/plan.json`` that identifies the export (checkpoint hash, features, data config, ids, ...). An
interrupted export rerun with the same plan computes only the missing shards, whichever process (rank) computes
them: a distributed export deals the missing shards to its ranks, each writing its own. The shards are then streamed into
``embeddings.npy`` (through a memory map, one shard at a time: never the whole array in memory), the index
written, the manifest rewritten ``complete``, and the shards removed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.store.io import atomic_path, read_csv_rows, read_json, write_csv, write_json, write_npy

log = logging.getLogger(__name__)

ARRAY = "embeddings.npy"
INDEX = "index.csv"
MANIFEST = "manifest.json"
SHARDS = "shards"
PLAN = "plan.json"


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
        """sha256 of the ids in row order (ties a clustering to its rows)."""
        return ids_digest(self.ids)


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of ``ids`` in order, one per line."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class EmbeddingSet:
    """An embeddings array (N, D) with its index, manifest and folder."""
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
    write_index(folder, index)
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


def write_index(folder: str | Path, index: EmbeddingIndex) -> None:
    """Write ``index.csv`` atomically, valid UTF-8: a file name's bytes that are not UTF-8 as ``\\xHH``, a
    backslash as ``\\\\`` (:func:`sslcluster.store.io.csv_escape`; :func:`read_index` gives the names back)."""
    labels = index.labels if index.labels is not None else np.full(len(index), -1, dtype=np.int64)
    write_csv(Path(folder) / INDEX, ("id", "path", "label"),
              ((i, p, "" if int(lab) < 0 else int(lab)) for i, p, lab in zip(index.ids, index.paths, labels)))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a complete embeddings set, or a one-line error naming the folder."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise SSLClusterError(f"embeddings folder not found: {folder}")
    if not mpath.exists():
        raise SSLClusterError(f"{folder} is not a complete embeddings set: {MANIFEST} is missing")
    manifest = read_json(mpath)
    if manifest.get("status") == "running":
        raise SSLClusterError(f"{mpath}: status is 'running', not 'complete': the export was interrupted or is "
                              "still running (rerun the export to finish it)")
    if manifest.get("status") != "complete":
        raise SSLClusterError(f"{mpath}: status is {manifest.get('status')!r}, not 'complete'")
    return manifest


def _index_rows(path: Path) -> Iterator[list[str]]:
    """The rows of ``index.csv`` after its header (cells unescaped, see :func:`write_index`); a one-line error
    when the header is not ``id,path,...``."""
    reader = read_csv_rows(path)
    header = next(reader, None)
    if header is None or header[:2] != ["id", "path"]:
        raise SSLClusterError(f"{path}: expected header 'id,path,label', got {header}")
    return reader


def read_index(folder: str | Path, with_labels: bool = False) -> EmbeddingIndex:
    """``index.csv`` of an embeddings folder: ids, paths, classes and (``with_labels``) labels (N,) int64."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.exists():
        raise SSLClusterError(f"index file missing: {path}")
    ids: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    reader = _index_rows(path)
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


class RowFile:
    """The rows of an (N, D) ``.npy`` file, never the whole file mapped or read: resident memory holds only the rows
    asked for (a memory map of the whole file keeps every page it touched resident while it is open, so streaming a
    file through one grows the process to the file's size). ``x[start:end]`` reads a block with a plain file read;
    ``x[rows]`` (int array) gathers those rows window by window (:meth:`_rows`), returned in the order asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or len(shape) != 2:
            raise SSLClusterError(f"{self.path}: expected a C-ordered (N, D) array, got shape {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self._row_bytes = self.shape[1] * self.dtype.itemsize

    #: the most of the file mapped at once by a read of scattered rows (resident only while that read runs)
    WINDOW_BYTES = 64 << 20

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, f: Any, start: int, count: int) -> np.ndarray:
        f.seek(self.offset + start * self._row_bytes)
        out = np.fromfile(f, dtype=self.dtype, count=count * self.shape[1])
        return out.reshape(count, self.shape[1])

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, slice):
            start, stop, step = item.indices(self.shape[0])
            if step != 1:
                raise IndexError("RowFile reads contiguous blocks (step 1)")
            with open(self.path, "rb") as f:
                return self._read(f, start, max(0, stop - start))
        return self._rows(np.asarray(item, dtype=np.int64).reshape(-1))

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (R,) gathered in the order asked. Written here (no library reads scattered rows of a file with
        bounded memory): the file is mapped one window of ``WINDOW_BYTES`` at a time and the window's rows taken
        from the map, so only the pages holding asked rows are read and at most one window is ever mapped (faster
        than one file read per run of consecutive rows: benchmarks/RESULTS.md, "Streaming clustering")."""
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: rows outside 0..{self.shape[0] - 1}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        window = max(1, self.WINDOW_BYTES // max(1, self._row_bytes))
        starts = np.searchsorted(sorted_rows, np.arange(0, self.shape[0] + window, window))
        for w, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            if a == b:
                continue
            first = w * window
            count = min(window, self.shape[0] - first)
            mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset + first * self._row_bytes,
                           shape=(count, self.shape[1]))
            out[order[a:b]] = mm[sorted_rows[a:b] - first]
            del mm
        return out


def streamed_ids_digest(folder: str | Path) -> tuple[int, str]:
    """The number of rows of ``index.csv`` and the sha256 of its ids (as :func:`ids_digest`), read row by row
    without holding the index in memory."""
    path = Path(folder) / INDEX
    if not path.exists():
        raise SSLClusterError(f"index file missing: {path}")
    h = hashlib.sha256()
    n = 0
    reader = _index_rows(path)
    while True:  # hashed 65,536 ids at a time: the same bytes as one update per id, without a call per row
        chunk = [row[0] for row in itertools.islice(reader, 1 << 16)]
        if not chunk:
            break
        h.update(("\n".join(chunk) + "\n").encode("utf-8", "surrogateescape"))
        n += len(chunk)
    return n, h.hexdigest()


def open_streaming(folder: str | Path) -> tuple[dict[str, Any], RowFile, str]:
    """A complete embeddings set for streaming: its manifest, its array as a :class:`RowFile` and the ids' sha256,
    validated as :func:`read_embeddings` does but holding neither the array nor the index in memory."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    apath = folder / ARRAY
    if not apath.exists():
        raise SSLClusterError(f"embeddings array missing: {apath}")
    try:
        rows = RowFile(apath)
    except (ValueError, EOFError, OSError) as e:
        raise SSLClusterError(f"{apath}: not a readable .npy array ({e})") from None
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        raise SSLClusterError(f"{apath}: expected a non-empty (N, D) array, got shape {rows.shape}")
    n, digest = streamed_ids_digest(folder)
    if n != rows.shape[0]:
        raise SSLClusterError(f"{folder}: {INDEX} has {n} rows but {ARRAY} has {rows.shape[0]}")
    if manifest.get("ids_sha256") and manifest["ids_sha256"] != digest:
        raise SSLClusterError(f"{folder}: ids in {INDEX} do not match the manifest's ids_sha256")
    return manifest, rows, digest


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparing plans."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class ShardedWriter:
    """Write an embeddings set of ``count`` rows shard by shard, resumably (see the module docstring).

    Args:
        folder: the embeddings folder ``embeddings/<name>``.
        count: number of rows.
        shard_size: rows per shard (the last shard may be shorter).
        dtype: float32 or float16.
        plan: what identifies this export; shards left by an interrupted export are reused only if its plan was
            equal.
    """

    def __init__(self, folder: str | Path, count: int, shard_size: int, dtype: np.dtype | str,
                 plan: dict[str, Any]) -> None:
        if count <= 0:
            raise SSLClusterError(f"nothing to export into {folder}: 0 rows")
        if shard_size <= 0:
            raise SSLClusterError(f"export.shard_size={shard_size} must be positive")
        self.folder = Path(folder)
        self.count = int(count)
        self.shard_size = int(shard_size)
        self.dtype = np.dtype(dtype)
        self.plan = _plain({**plan, "count": self.count, "shard_size": self.shard_size, "dtype": str(self.dtype)})
        self.n_shards = -(-self.count // self.shard_size)

    @property
    def shards_dir(self) -> Path:
        """The folder holding the shards of an export in progress."""
        return self.folder / SHARDS

    def shard_path(self, k: int) -> Path:
        """Path of shard ``k``."""
        return self.shards_dir / f"{k:05d}.npy"

    def rows_path(self, k: int) -> Path:
        """Path of the row positions (the sample ids) shard ``k`` holds, written beside it."""
        return self.shards_dir / f"rows_{k:05d}.npy"

    def shard_rows(self, k: int) -> tuple[int, int]:
        """Row range ``[start, end)`` of shard ``k``."""
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.count)

    def _shard_ok(self, k: int) -> bool:
        try:
            a = np.load(self.shard_path(k), mmap_mode="r")
            rows = np.load(self.rows_path(k))
        except (OSError, ValueError):
            return False
        start, end = self.shard_rows(k)
        return (a.ndim == 2 and a.shape[0] == end - start and a.dtype == self.dtype
                and np.array_equal(rows, np.arange(start, end)))

    def missing(self) -> list[int]:
        """The shards not yet on disk (read only: any rank may ask, after :meth:`begin` on one of them)."""
        return [k for k in range(self.n_shards) if not self._shard_ok(k)]

    def begin(self) -> list[int]:
        """Mark the set ``running`` and return the shards still to compute (all of them unless an interrupted
        export with the same plan left some)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / MANIFEST, {"status": "running", "count": self.count, "plan": self.plan})
        plan_path = self.shards_dir / PLAN
        previous = None
        if plan_path.exists():
            try:
                previous = read_json(plan_path)
            except (OSError, ValueError):
                previous = None
        if previous != self.plan:
            if self.shards_dir.exists():
                log.info("discarding shards of a different export in %s", self.shards_dir)
                shutil.rmtree(self.shards_dir)
            self.shards_dir.mkdir(parents=True)
            write_json(plan_path, self.plan)
            return list(range(self.n_shards))
        missing = self.missing()
        if len(missing) < self.n_shards:
            log.info("resuming export into %s: %d of %d shards already done", self.folder,
                     self.n_shards - len(missing), self.n_shards)
        return missing

    def write_shard(self, k: int, array: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Save shard ``k`` (atomically) after checking its shape, its rows (the positions (B,) of the samples it
        holds, when given: each must be the shard's own, in order, once) and that every value is finite. The rows
        are saved beside it (``rows_<k>.npy``, after the shard: a shard counts as done only with both)."""
        start, end = self.shard_rows(k)
        if array.ndim != 2 or array.shape[0] != end - start:
            raise SSLClusterError(f"shard {k} of {self.folder}: expected {end - start} rows, got shape {array.shape}")
        expected = np.arange(start, end)
        if rows is not None and not np.array_equal(np.asarray(rows), expected):
            raise SSLClusterError(f"shard {k} of {self.folder}: rows {np.asarray(rows)[:5].tolist()}... are not "
                                  f"rows {start}..{end - 1} in order")
        bad = ~np.isfinite(array.astype(np.float32, copy=False)).all(axis=1)
        if bad.any():
            rows = (np.flatnonzero(bad) + start)[:5].tolist()
            raise SSLClusterError(f"{int(bad.sum())} exported rows of {self.folder} contain NaN or inf (first rows: "
                                  f"{rows}); nothing was marked complete")
        write_npy(self.shard_path(k), np.ascontiguousarray(array, dtype=self.dtype))
        write_npy(self.rows_path(k), expected)

    def finish(self, index: EmbeddingIndex, keep_shards: bool = False, **manifest: Any) -> Path:
        """Assemble the shards into ``embeddings.npy`` one at a time, write the index, then the ``complete``
        manifest; remove the shards."""
        if len(index) != self.count:
            raise SSLClusterError(f"{len(index)} index rows for {self.count} embeddings in {self.folder}")
        first = np.load(self.shard_path(0), mmap_mode="r")
        dim = int(first.shape[1])
        del first
        itemsize = self.dtype.itemsize
        with atomic_path(self.folder / ARRAY) as tmp:
            head = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(self.count, dim))
            offset = head.offset
            del head  # header written; the rows are filled one shard at a time below
            for k in range(self.n_shards):
                start, end = self.shard_rows(k)
                shard = np.load(self.shard_path(k))
                if shard.shape != (end - start, dim) or shard.dtype != self.dtype:
                    raise SSLClusterError(f"{self.shard_path(k)}: shape {shard.shape} {shard.dtype}, expected "
                                          f"({end - start}, {dim}) {self.dtype}; rerun the export")
                region = np.memmap(tmp, dtype=self.dtype, mode="r+", offset=offset + start * dim * itemsize,
                                   shape=(end - start, dim))
                region[:] = shard
                region.flush()
                del region, shard
        write_index(self.folder, index)
        info = {
            "count": self.count,
            "dim": dim,
            "dtype": str(self.dtype),
            "ids_sha256": index.ids_sha256(),
            "classes": index.classes,
            "shard_size": self.shard_size,
            **manifest,
            "status": "complete",
        }
        write_json(self.folder / MANIFEST, info)
        if not keep_shards:
            shutil.rmtree(self.shards_dir, ignore_errors=True)
        return self.folder


class Embeddings:
    """One embeddings folder (``embeddings/<name>/`` of a run, or one given by the user): the array, its
    ``index.csv`` and ``manifest.json``, read through :func:`read_embeddings` and friends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        """The folder name (``<split>``, ``pixels_<split>``, ...)."""
        return self.path.name

    def is_complete(self) -> bool:
        """Whether the manifest is on disk (it is written last, so the set is finished)."""
        return (self.path / MANIFEST).exists()

    def manifest(self) -> dict[str, Any]:
        """The manifest of a complete set, or a one-line error naming the folder."""
        return read_manifest(self.path)

    def index(self, with_labels: bool = False) -> EmbeddingIndex:
        """Ids, image paths, classes and (``with_labels``) labels (N,) int64, -1 where unknown."""
        return read_index(self.path, with_labels=with_labels)

    def read(self, with_labels: bool = False, mmap: bool = True) -> EmbeddingSet:
        """The array (N, D) (memory-mapped by default) with its index and manifest, validated."""
        return read_embeddings(self.path, with_labels=with_labels, mmap=mmap)
