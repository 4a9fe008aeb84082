"""The run directory: the contract every stage reads and writes (see ``docs/architecture.md``).

::

    <root>/<run_key>/
      config.yaml  metrics.json  checkpoints/  embeddings/<split>/  clusters/<cluster_key>/

Keys are unique within a root: a new run directory is created with an exclusive ``mkdir``, so two runs started at
the same moment never share one. A process that creates or opens a run also holds an exclusive ``flock`` on the
run's ``.lock`` file while it works in the run: as long as a :class:`RunDir` object of that run is alive in the
process (or until :meth:`RunDir.release`); the kernel drops it when the process ends, even when killed. A second
process cannot open, overwrite or write into a run that another one is working in: it is refused with the other
process's id.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import itertools
import os
import re
import secrets
import shutil
import weakref
from pathlib import Path
from typing import Any

from sslcluster.errors import SSLClusterError
from sslcluster.store.clusters import Clustering, clusterings
from sslcluster.store.embeddings import Embeddings
from sslcluster.store.io import read_json, write_json, write_text

LOCK_NAME = ".lock"
#: run folders this process holds the lock of: resolved path -> [open file descriptor, inode of the lock file,
#: number of live RunDir objects holding it, generation (which lock this is)]
_HELD: dict[str, list[int]] = {}
_GENERATION = itertools.count(1)

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


def check_key(key: str, what: str = "run key") -> str:
    """Refuse keys that are not plain folder names (no separators, no leading dot)."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise SSLClusterError(f"invalid {what} {key!r}: use letters, digits and _.=,+- (no '/' or leading '.')")
    return key


def new_key(tag: str) -> str:
    """A fresh key: ``YYYYmmdd-HHMMSS-<tag>-<6 hex>``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", tag).strip("-") or "run"
    return f"{stamp}-{tag}-{secrets.token_hex(3)}"


def _lock_run(path: Path) -> int:
    """Take (or confirm this process holds) the exclusive lock of run folder ``path``; refuse if another process
    holds it. Returns the generation of the lock, which names this hold."""
    real = os.path.realpath(path)
    lock_path = os.path.join(real, LOCK_NAME)
    held = _HELD.get(real)
    if held is not None:
        try:
            if os.fstat(held[0]).st_nlink > 0 and os.stat(lock_path).st_ino == held[1]:
                held[2] += 1  # this process already holds it
                return held[3]
        except FileNotFoundError:
            pass
        os.close(held[0])  # the folder was removed and made again: lock the new one
        del _HELD[real]
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise SSLClusterError(f"run {path.name!r} in {path.parent} is in use by another process (pid {other}); "
                                  "wait for it to finish or choose another run.key") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[real] = [fd, os.fstat(fd).st_ino, 1, next(_GENERATION)]
    return _HELD[real][3]


def _release_run(path: str | os.PathLike, force: bool = True, generation: int | None = None) -> None:
    """Drop one hold on the lock of ``path`` (all of them with ``force``); unlock when none is left. A hold on a
    lock that has since been dropped and taken again (another ``generation``) is already gone."""
    real = os.path.realpath(path)
    held = _HELD.get(real)
    if held is None or (generation is not None and held[3] != generation):
        return
    held[2] -= 1
    if force or held[2] <= 0:
        del _HELD[real]
        os.close(held[0])


def path_to_store(run_path: str | os.PathLike, path: str | os.PathLike) -> str:
    """How a path is written into a file of the run at ``run_path``: relative to the run when it lies inside it
    (so a run moved or copied elsewhere still finds its own files), else absolute (user data stays where it is)."""
    run_real, real = Path(os.path.realpath(run_path)), Path(os.path.realpath(path))
    if real == run_real or run_real in real.parents:
        return real.relative_to(run_real).as_posix()
    return str(Path(path).expanduser().absolute())


def stored_path(run_path: str | os.PathLike, stored: str | os.PathLike) -> Path:
    """A path read from a file of the run at ``run_path``: relative ones are relative to the run."""
    p = Path(stored).expanduser()
    return p if p.is_absolute() else Path(run_path) / p


class RunDir:
    """One run's folder. Create new ones with :meth:`create`, open existing ones with :meth:`open`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.key = self.path.name

    def _hold(self) -> "RunDir":
        """Lock the run for this process while this object lives."""
        generation = _lock_run(self.path)
        self._finalizer = weakref.finalize(self, _release_run, os.path.realpath(self.path), False, generation)
        return self

    # -- creation -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, key: str | None = None, tag: str = "run",
               overwrite: bool = False) -> "RunDir":
        """A new run folder under ``root`` (``key``, or a fresh one), locked for this process."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if key is not None:
            check_key(key)
            path = root / key
            if path.exists():
                if not overwrite:
                    raise SSLClusterError(
                        f"run key {key!r} already exists in {root} (pass run.overwrite=true to replace it)")
                _lock_run(path)  # refuses if another process is working in it
                shutil.rmtree(path)
                _release_run(path, force=True)
            try:
                path.mkdir()  # exclusive: of two processes creating the same key at once, one is refused here
            except FileExistsError:
                raise SSLClusterError(f"run key {key!r} already exists in {root}: another run created it at the "
                                      "same moment (choose another run.key)") from None
            return cls(path)._hold()
        for _ in range(100):
            path = root / new_key(tag)
            try:
                path.mkdir()  # exclusive: fails if another process took the key first
            except FileExistsError:
                continue
            return cls(path)._hold()
        raise SSLClusterError(f"could not create a unique run directory in {root}")

    @classmethod
    def open(cls, root: str | os.PathLike, key: str, lock: bool = True) -> "RunDir":
        """An existing run; with ``lock`` (to write into it) refused while another process holds it."""
        check_key(key)
        path = Path(root) / key
        if not path.is_dir():
            raise SSLClusterError(f"no run {key!r} in {Path(root)} (expected folder {path})")
        return cls(path)._hold() if lock else cls(path)

    def release(self) -> None:
        """Drop this process's lock on the run now (otherwise dropped with the last RunDir of it, or at exit)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        _release_run(self.path, force=True)

    # -- layout ---------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        """``config.yaml``."""
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``."""
        return self.path / "metrics.json"

    @property
    def checkpoints_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / "checkpoints"

    def embeddings_dir(self, name: str) -> Path:
        """``embeddings/<name>/``."""
        return self.path / "embeddings" / check_key(name, "embeddings name")

    def cluster_dir(self, key: str) -> Path:
        """``clusters/<key>/``."""
        return self.path / "clusters" / check_key(key, "cluster key")

    def embeddings(self, name: str) -> Embeddings:
        """The embeddings set ``embeddings/<name>/``."""
        return Embeddings(self.embeddings_dir(name))

    def embedding_sets(self) -> list[Embeddings]:
        """Every complete embeddings set of the run (``embeddings/<name>/`` with its manifest), by name."""
        folder = self.path / "embeddings"
        if not folder.is_dir():
            return []
        return [Embeddings(p) for p in sorted(folder.iterdir()) if p.is_dir() and Embeddings(p).is_complete()]

    def clustering(self, key: str) -> Clustering:
        """The clustering ``clusters/<key>/`` (it may not exist yet)."""
        return Clustering(self.cluster_dir(key))

    def clusterings(self) -> list[Clustering]:
        """Every clustering of the run that has a ``record.json``, by key."""
        return clusterings(self.path)

    def store_path(self, path: str | os.PathLike) -> str:
        """``path`` as written into the run's files (:func:`path_to_store`)."""
        return path_to_store(self.path, path)

    def resolve(self, stored: str | os.PathLike) -> Path:
        """A path read from the run's files (:func:`stored_path`)."""
        return stored_path(self.path, stored)

    # -- files ----------------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        """Write ``config.yaml`` atomically."""
        write_text(self.config_path, yaml_text)

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json``, empty when there is none."""
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into ``metrics.json`` (atomic rewrite)."""
        metrics = self.read_metrics()
        metrics.update(values)
        write_json(self.metrics_path, metrics)
        return metrics
