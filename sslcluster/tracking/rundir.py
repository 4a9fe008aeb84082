"""The run directory: the contract every stage reads and writes (see ``docs/design.md``).

::

    <root>/<run_key>/
      config.yaml  metrics.json  checkpoints/  embeddings/<split>/  clusters/<cluster_key>/

Keys are unique within a root: a new run directory is created with an exclusive ``mkdir``, so two runs started at
the same moment never share one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from sslcluster.errors import SSLClusterError
from sslcluster.tracking.io import read_json, write_json, write_text

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
                shutil.rmtree(path)
            path.mkdir()
            return cls(path)
        for _ in range(100):
            path = root / new_key(tag)
            try:
                path.mkdir()  # exclusive: fails if another process took the key first
                return cls(path)
            except FileExistsError:
                continue
        raise SSLClusterError(f"could not create a unique run directory in {root}")

    @classmethod
    def open(cls, root: str | os.PathLike, key: str) -> "RunDir":
        check_key(key)
        path = Path(root) / key
        if not path.is_dir():
            raise SSLClusterError(f"no run {key!r} in {Path(root)} (expected folder {path})")
        return cls(path)

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
