"""Reading ``names.json`` (the schema is in :mod:`sslcluster.naming`), for pictures and W&B.

Kept apart from the naming stage so that readers never import the ``openai`` client.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sslcluster.errors import SSLClusterError
from sslcluster.store.io import file_sha256, read_json

log = logging.getLogger(__name__)

NAMES = "names.json"


def read_names(cluster_dir: str | Path, check: bool = True) -> dict[int, dict[str, Any]]:
    """The named clusters of ``cluster_dir``: ``{cluster id: {"name", "description", "images", ...}}``, only
    entries that have a name. Empty when there is no ``names.json``, or (``check``) when it was made for other
    labels than the current ``labels.npy``. For pictures and W&B."""
    cluster_dir = Path(cluster_dir)
    path = cluster_dir / NAMES
    if not path.is_file():
        return {}
    try:
        doc = read_json(path)
        clusters = doc["clusters"]
    except (ValueError, KeyError, TypeError) as e:
        raise SSLClusterError(f"{path}: not a valid names file ({e})") from None
    if check and (cluster_dir / "labels.npy").is_file() \
            and doc.get("labels_sha256") != file_sha256(cluster_dir / "labels.npy"):
        log.warning("%s was written for other labels than %s; ignoring it", path, cluster_dir / "labels.npy")
        return {}
    return {int(k): v for k, v in clusters.items() if isinstance(v, dict) and v.get("name")}
