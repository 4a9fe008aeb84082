"""A FiftyOne dataset (or one of its saved views) as an image source: ``data=fiftyone data.source.dataset=NAME``.

The samples' image files feed pretraining, export, clustering and evaluation exactly as the same files in an
image folder do (:class:`~sslcluster.data.sources.ImageFolderSource`):

- order: the files in the order a folder scan visits them (by folder, a folder's files before its sub-folders,
  names sorted), whatever order the samples were added in, so a dataset made from a folder gives the folder's rows;
- splits: samples tagged ``train`` and ``test`` (FiftyOne's usual split tags) are those splits when both tags
  are present (like a folder's own ``train/`` and ``test/``); otherwise a seeded held-out test split of
  ``holdout_fraction`` (stratified by label when every sample has one), recorded in ``<run>/split.csv``;
- bad files: checked by the folder scan's checks and cache (:func:`~sslcluster.data.folders.scan_files`) under
  the same ``data.bad_files`` policy, the skipped ones listed in ``<run>/skipped_files.csv``;
- ids: the FiftyOne sample ids, so every row of ``index.csv`` names its sample and results written back (the
  ``sslcluster fiftyone`` stage) land on the same samples;
- labels (held out, evaluation only): the ``label`` of the Classification field ``label_field`` when one is
  named; classes are the sorted label names of the whole view, -1 where a sample has none.

FiftyOne is queried once when the source is built; the source keeps plain lists (DataLoader workers never touch
the database).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from sslcluster.data.folders import DEFAULT_MAX_PIXELS, Skipped, open_image, scan_files
from sslcluster.data.sources import FOLDER_SPLITS, check_holdout_fraction, held_out_rows
from sslcluster.errors import SSLClusterError


def walk_order(path: str) -> tuple[tuple[int, str], ...]:
    """Sort key of an absolute file path that orders files as a sorted ``os.walk`` visits them: a folder's own
    files (by name) before its sub-folders (by name)."""
    parts = Path(path).parts
    return tuple((1, d) for d in parts[:-1]) + ((0, parts[-1]),)


class FiftyOneSource:
    """The images of FiftyOne dataset ``dataset`` (or its saved view ``view``); see the module docstring."""

    def __init__(self, dataset: str, split: str | None = "train", view: str | None = None,
                 label_field: str | None = None, channels: int = 3, bad_files: str = "skip",
                 max_pixels: int = DEFAULT_MAX_PIXELS, validate: str = "full", cache: bool = True,
                 cache_dir: str | None = None, split_tags: bool = True, holdout_fraction: float = 0.2,
                 holdout_seed: int = 0, split_file: str | None = None) -> None:
        from sslcluster.integrations.fiftyone import classification_labels, load_collection

        if split not in (None, "train", "test", "all"):
            raise SSLClusterError(f"FiftyOne split {split!r} is not one of train, test, all")
        collection = load_collection(str(dataset), view)
        where = f"FiftyOne dataset {dataset!r}" + (f" view {view!r}" if view else "")
        if len(collection) == 0:
            raise SSLClusterError(f"{where} has no samples (data.source.dataset / data.source.view)")
        all_ids, all_paths, all_tags = collection.values(["id", "filepath", "tags"])
        all_names = (classification_labels(collection, label_field, where) if label_field
                     else [None] * len(all_ids))
        order = sorted(range(len(all_ids)), key=lambda k: walk_order(all_paths[k]))
        ids: list[str] = [str(all_ids[k]) for k in order]
        paths: list[str] = [str(all_paths[k]) for k in order]
        tags: list[list[str]] = [list(all_tags[k] or []) for k in order]
        names: list[str | None] = [all_names[k] for k in order]
        result = scan_files(paths, policy=bad_files, max_pixels=int(max_pixels), validate=validate, cache=cache,
                            cache_dir=cache_dir, cache_key=f"fiftyone:{dataset}:{view or ''}")
        self.skipped: list[Skipped] = result.skipped
        usable = set(result.files)
        keep = [k for k, p in enumerate(paths) if os.path.abspath(p) in usable]
        if not keep:
            raise SSLClusterError(f"no readable image in {where}: all {len(paths)} files were skipped (first: "
                                  f"{'; '.join(f'{s.path}: {s.reason}' for s in self.skipped[:3])})")
        ids, paths = [ids[k] for k in keep], [paths[k] for k in keep]
        tags, names = [tags[k] for k in keep], [names[k] for k in keep]
        self.classes = sorted({n for n in names if n is not None}) or None
        lookup = {c: k for k, c in enumerate(self.classes or [])}
        labels = (np.asarray([lookup.get(n, -1) if n is not None else -1 for n in names], dtype=np.int64)
                  if self.classes else None)
        tagged = [{t for t in ts if t in FOLDER_SPLITS} for ts in tags]
        own = split_tags and all(any(s in t for t in tagged) for s in FOLDER_SPLITS)
        rows = list(range(len(ids)))
        if split in ("train", "test") and own:
            rows = [k for k in rows if split in tagged[k]]
        elif split == "all" and own:
            rows = [k for k in rows if tagged[k]]
        elif split in ("train", "test"):
            check_holdout_fraction(holdout_fraction)
            stratify = labels if labels is not None and (labels >= 0).all() else None
            rows = held_out_rows(ids, stratify, split, float(holdout_fraction), int(holdout_seed), split_file,
                                 where)
        if not rows:
            raise SSLClusterError(f"{where}: no sample in split {split!r}")
        self.channels = channels
        self.max_pixels = int(max_pixels)
        self.dataset, self.view = str(dataset), view
        self.ids = [ids[k] for k in rows]
        self.paths = [paths[k] for k in rows]
        self.labels = labels[rows] if labels is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """Image ``i`` read from its file (mode and pixel cap applied by ``open_image``)."""
        return open_image(self.paths[i], self.channels, self.max_pixels)
