"""A disk cache of validated answers, keyed by (images, model, prompt), so a rerun does not pay again.

One JSON file per answer, ``<dir>/<key[:2]>/<key>.json``, written atomically; an unreadable entry is a miss.
Only answers that passed validation are stored, so a failed request is retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from sslcluster.naming.prompt import Answer
from sslcluster.store.io import read_json, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(model: str, prompt: str, image_sha256: Sequence[str]) -> str:
    """sha256 of the model, the exact prompt text and the encoded bytes of each image, in order."""
    blob = json.dumps({"v": CACHE_VERSION, "model": model, "prompt": prompt, "images": list(image_sha256)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers on disk under ``folder`` (created on first write)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Answer | None:
        """The cached answer for ``key``, or None when absent or unreadable (logged)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = read_json(path)
            return Answer(str(entry["name"]), str(entry["description"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable naming cache entry %s (%s)", path, e)
            return None

    def put(self, key: str, answer: Answer, model: str) -> None:
        """Store ``answer`` for ``key`` with the model name and a timestamp."""
        write_json(self._path(key), {"name": answer.name, "description": answer.description, "model": model,
                                     "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
