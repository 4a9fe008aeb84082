"""The run directory: the contract every stage reads and writes (see ``docs/design.md``).

::

    <root>/<run_key>/
      config.yaml  metrics.json  checkpoints/  embeddings/<split>/  clusters/<cluster_key>/

Keys are unique within a root: a new run directory is created with an exclusive ``mkdir``, so two runs started at
the same moment never share one. A process that creates or opens a run also holds an exclusive ``flock`` on the
run's ``.lock`` file for as long as it lives (the kernel drops it when the process ends, even when killed), so a
second process cannot open, overwrite or write into a run that another one is working in: it is refused with the
other process's id.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from sslcluster.errors import SSLClusterError
from sslcluster.tracking.io import read_json, write_json, write_text

LOCK_NAME = ".lock"
#: run folders this process holds the lock of: resolved path -> (open file descriptor, inode of the lock file)
_HELD: dict[str, tuple[int, int]] = {}

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


def _lock_run(path: Path) -> None:
    """Take (or confirm this process holds) the exclusive lock of run folder ``path``; refuse if another process
    holds it."""
    real = os.path.realpath(path)
    lock_path = os.path.join(real, LOCK_NAME)
    held = _HELD.get(real)
    if held is not None:
        try:
            if os.stat(lock_path).st_ino == held[1]:
                return  # this process already holds it
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
    _HELD[real] = (fd, os.fstat(fd).st_ino)


def _release_run(path: Path) -> None:
    held = _HELD.pop(os.path.realpath(path), None)
    if held is not None:
        os.close(held[0])


class RunDir:
    """One run's folder. Create new ones with :meth:`create`, open existing ones with :meth:`open`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.key = self.path.name

    # -- creation -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, key: str | None = None, tag: str = "run",
               overwrite: bool = False) -> "RunDir":
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
                _release_run(path)
            try:
                path.mkdir()  # exclusive: of two processes creating the same key at once, one is refused here
            except FileExistsError:
                raise SSLClusterError(f"run key {key!r} already exists in {root}: another run created it at the "
                                      "same moment (choose another run.key)") from None
            _lock_run(path)
            return cls(path)
        for _ in range(100):
            path = root / new_key(tag)
            try:
                path.mkdir()  # exclusive: fails if another process took the key first
            except FileExistsError:
                continue
            _lock_run(path)
            return cls(path)
        raise SSLClusterError(f"could not create a unique run directory in {root}")

    @classmethod
    def open(cls, root: str | os.PathLike, key: str, lock: bool = True) -> "RunDir":
        """An existing run; with ``lock`` (to write into it) refused while another process holds it."""
        check_key(key)
        path = Path(root) / key
        if not path.is_dir():
            raise SSLClusterError(f"no run {key!r} in {Path(root)} (expected folder {path})")
        if lock:
            _lock_run(path)
        return cls(path)

    def release(self) -> None:
        """Drop this process's lock on the run (it is dropped anyway when the process ends)."""
        _release_run(self.path)

    # -- layout ---------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def embeddings_dir(self, name: str) -> Path:
        return self.path / "embeddings" / check_key(name, "embeddings name")

    def cluster_dir(self, key: str) -> Path:
        return self.path / "clusters" / check_key(key, "cluster key")

    # -- files ----------------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        write_text(self.config_path, yaml_text)

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into ``metrics.json`` (atomic rewrite)."""
        metrics = self.read_metrics()
        metrics.update(values)
        write_json(self.metrics_path, metrics)
        return metrics
