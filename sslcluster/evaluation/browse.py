"""Per-cluster folders for a person to browse: every image of a clustering under
``clusters/<key>/folders/cluster_<id>/`` (noise under ``noise/``).

Image files are symlinked (default) or copied; images that are not files (built-in sources such as
``sklearn:load_digits[i]``) are rendered to PNG. The tree is built in a temporary folder beside it and renamed into
place at the end, so ``folders/`` exists only when complete; ``folders/manifest.json`` lists the counts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.store.io import write_json

MODES = ("symlink", "copy")
_SAFE = re.compile(r"[^A-Za-z0-9_.=,+-]+")


def folder_name(cluster_id: int) -> str:
    """Folder name of a cluster in the browse tree: ``noise`` for negative ids, else ``cluster_<id>``."""
    return "noise" if cluster_id < 0 else f"cluster_{cluster_id}"


def _file_name(row: int, sample_id: str, suffix: str) -> str:
    stem = _SAFE.sub("_", str(sample_id)).strip("._")[:80] or "sample"
    return f"{row:06d}_{stem}{suffix}"


def write_cluster_folders(out: str | Path, ids: Sequence[str], paths: Sequence[str], labels_pred: np.ndarray,
                          mode: str = "symlink", load: Callable[[str], Any] | None = None) -> Path:
    """Put row i's image (``paths[i]``, id ``ids[i]``) into ``out/cluster_<labels_pred[i]>/``; returns ``out``.

    ``load(path) -> PIL.Image`` renders paths that are not files (default: :func:`sslcluster.data.resolve
    .load_image`). An existing ``out`` is replaced only once the new tree is complete."""
    if mode not in MODES:
        raise SSLClusterError(f"evaluate.folders={mode!r}: use one of {', '.join(MODES)} (or null: off)")
    if not (len(ids) == len(paths) == len(labels_pred)):
        raise SSLClusterError(f"{len(labels_pred)} cluster labels for {len(paths)} image paths")
    if load is None:
        from sslcluster.data.resolve import load_image

        load = load_image
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        counts: dict[str, int] = {}
        for c in np.unique(labels_pred):
            (tmp / folder_name(int(c))).mkdir()
        for i, (sid, src, c) in enumerate(zip(ids, paths, labels_pred)):
            sub = folder_name(int(c))
            counts[sub] = counts.get(sub, 0) + 1
            p = Path(src)
            if p.is_file():
                dest = tmp / sub / _file_name(i, sid, p.suffix.lower())
                if mode == "symlink":
                    os.symlink(p.resolve(), dest)
                else:
                    shutil.copy2(p, dest)
            else:
                load(src).save(tmp / sub / _file_name(i, sid, ".png"))
        write_json(tmp / "manifest.json", {"mode": mode, "n_images": len(paths), "folders": counts,
                                           "status": "complete"})
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
