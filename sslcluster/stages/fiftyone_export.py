"""``sslcluster fiftyone run.key=KEY``: a run opened in FiftyOne (the ``fiftyone`` extra).

A persistent FiftyOne dataset (``fiftyone.dataset``, default: the run key) gets

- one sample per exported image (``filepath``; images that are no files, the digits' and torchvision's, are written
  once as PNG files to ``<run>/fiftyone/images/``), tagged with its split(s);
- ``ground_truth`` (``fiftyone.label_field``): the held-out label as a Classification, where there is one and the
  sample has none yet (a dataset's own labels, e.g. of the dataset a run trained on, are never overwritten);
- one field per clustering of the run, named by its key: a Classification whose ``label`` is the cluster's name
  when the LLM named it, else the cluster id (``noise`` for -1), with attributes ``cluster_id`` and, when named,
  ``name`` and ``description`` as ``names.json`` holds them;
- per representation (``learned``, ``pixels``, ``timm_<model>``; the brain key), its primary clustering's
  embeddings registered with FiftyOne Brain as a 2-D visualization: the run's own UMAP points
  (``clusters/<key>/projection_umap.npz``, written by evaluation with its scatter plot; else its PCA or t-SNE
  points) when they cover every clustered row, else a projection computed by FiftyOne Brain
  (``fiftyone.method``, UMAP by default);
- ``info["sslcluster"]``: the run key and folder, ``metrics.json`` and each clustering's ``metrics.json``;
- a saved workspace ``sslcluster``: the sample grid beside the embeddings panel, the panel's state naming the
  learned representation's brain key and its clustering as the colour (the App of FiftyOne 1.22 opens the
  panel on its list of brain keys all the same: pick one, then ``Color by <clustering key>.label``).

Samples are matched by sample id (a run trained on a FiftyOne dataset carries them in ``index.csv``) or by file
path, so a second call updates the fields and adds nothing. The run is read only through :mod:`sslcluster.store`;
FiftyOne only through :mod:`sslcluster.integrations.fiftyone`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from sslcluster.errors import SSLClusterError
from sslcluster.store.clusters import Clustering
from sslcluster.store.representations import display_name, metric_prefix
from sslcluster.store.rundir import RunDir
from sslcluster.store.runconfig import read_run_config

log = logging.getLogger(__name__)

#: where images that are no files (``sklearn:``/``torchvision:`` references) are written for FiftyOne
MEDIA_DIR = "fiftyone/images"
#: the saved workspace the stage adds to the dataset
WORKSPACE = "sslcluster"


def _media_name(sample_id: str) -> str:
    """A file name for the image of ``sample_id``: its safe characters and a short hash (distinct ids never share
    a name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample_id)[:80]
    return f"{safe}-{hashlib.sha256(sample_id.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}.png"


def media_paths(run: RunDir, ids: list[str], paths: list[str]) -> list[str]:
    """The file of each index row: its own path when it is a file, else (a ``sklearn:`` / ``torchvision:``
    reference) a PNG written once under ``<run>/fiftyone/images/``."""
    from sslcluster.data.resolve import load_image
    from sslcluster.store.io import atomic_path

    root = (read_run_config(run.path).get("data") or {}).get("source", {}).get("root")
    out: list[str] = []
    written = 0
    for sid, path in zip(ids, paths):
        if Path(path).is_file():
            out.append(str(Path(path).absolute()))
            continue
        if ":" not in path or path.startswith("/"):
            raise SSLClusterError(f"image of {sid!r} not found: {path} (moved since the export?)")
        target = run.path / MEDIA_DIR / _media_name(sid)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                load_image(path, torchvision_root=str(root) if root else None).save(tmp, format="PNG")
            written += 1
        out.append(str(target.absolute()))
    if written:
        log.info("wrote %d images to %s for FiftyOne", written, run.path / MEDIA_DIR)
    return out


def _samples(run: RunDir) -> tuple[list[str], list[str], list[str | None], list[set[str]]]:
    """Every exported image of the run once (by path, in the order the embeddings sets list them): index ids,
    paths, held-out class names (None unknown) and the splits it was exported in."""
    order: dict[str, int] = {}
    ids: list[str] = []
    paths: list[str] = []
    names: list[str | None] = []
    splits: list[set[str]] = []
    sets = run.embedding_sets()
    if not sets:
        raise SSLClusterError(f"run {run.key} has no exported embeddings: run the export stage first")
    for emb in sets:
        index = emb.index(with_labels=True)
        split = str(emb.manifest().get("split") or "")
        classes = index.classes
        assert index.labels is not None
        for sid, path, lab in zip(index.ids, index.paths, index.labels):
            k = order.get(path)
            if k is None:
                k = order[path] = len(ids)
                ids.append(sid)
                paths.append(path)
                names.append(None if lab < 0 else (classes[lab] if classes and lab < len(classes) else str(lab)))
                splits.append(set())
            if split:
                splits[k].add(split)
    return ids, paths, names, splits


def _cluster_values(clustering: Clustering, sample_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    """sample id -> the Classification of the clustering (see the module docstring)."""
    from sslcluster.naming.names import read_names

    record, labels = clustering.load()
    index = clustering.index(record, labels, with_labels=False)
    named = read_names(clustering.path)
    out: dict[str, dict[str, Any]] = {}
    for path, c in zip(index.paths, labels.tolist()):
        entry = named.get(int(c))
        value: dict[str, Any] = {"label": "noise" if c < 0 else str(c), "cluster_id": int(c)}
        if entry:
            value["label"] = str(entry["name"])
            value["name"] = str(entry["name"])
            if entry.get("description"):
                value["description"] = str(entry["description"])
        out[sample_of[path]] = value
    return out


def _points(clustering: Clustering, n: int) -> tuple[np.ndarray | None, str]:
    """The run's own 2-D points (N, 2) of the clustering's rows and the projection's name, when evaluation kept
    them for every row: its UMAP, else its PCA or t-SNE; else ``(None, "")``."""
    from sslcluster.evaluation.plots import PROJECTIONS

    for method in PROJECTIONS:  # umap first
        kept = clustering.projection(method)
        if kept is None:
            continue
        rows, xy = kept
        if len(rows) != n or not np.array_equal(np.sort(rows), np.arange(n)):
            continue
        out = np.empty((n, 2), dtype=np.float32)
        out[rows] = xy
        return out, method
    return None, ""


def export_run(cfg: DictConfig, run: RunDir) -> Any:
    """Load run ``run`` into its FiftyOne dataset (see the module docstring); returns the dataset."""
    from sslcluster.integrations import fiftyone as fo_int

    fcfg = cfg.fiftyone
    t0 = time.perf_counter()
    fo_int.import_fiftyone()
    name = str(fcfg.dataset or run.key)
    ids, paths, names, splits = _samples(run)
    files = media_paths(run, ids, paths)
    dataset = fo_int.open_dataset(name)
    times = {"read": time.perf_counter() - t0}
    sample_ids = fo_int.upsert_samples(dataset, files, sample_ids=ids, tags=[sorted(s) for s in splits])
    sample_of = dict(zip(paths, sample_ids))
    times["samples"] = time.perf_counter() - t0 - sum(times.values())
    label_field = str(fcfg.label_field)
    fo_int.set_classifications(dataset, label_field, {s: {"label": n} for s, n in zip(sample_ids, names)
                                                      if n is not None}, keep=True)
    clusterings = [c for c in run.clusterings() if c.read_record().get("status") == "complete"]
    for c in clusterings:
        fo_int.set_classifications(dataset, c.key, _cluster_values(c, sample_of))
    times["fields"] = time.perf_counter() - t0 - sum(times.values())
    brain_keys: dict[str, str] = {}
    if fcfg.brain:
        for c in clusterings:
            record = c.record()
            if not record.get("primary"):
                continue
            key = display_name(metric_prefix(str(record["representation"])))
            es = c.read_embeddings(record)
            rows = [sample_of[p] for p in es.index.paths]
            points, own = _points(c, len(rows))
            log.info("brain key %s: %d points (%s)", key, len(rows), f"the run's own {own}" if points is not None
                     else f"{fcfg.method} computed by FiftyOne Brain")
            vectors = None if points is not None else np.asarray(es.array, dtype=np.float32)  # (N, D) when computed
            fo_int.register_visualization(dataset, key, rows, vectors, points, method=str(fcfg.method),
                                          seed=int(cfg.seed))
            brain_keys[key] = c.key
    times["brain"] = time.perf_counter() - t0 - sum(times.values())
    dataset.info = {**(dataset.info or {}), "sslcluster": {
        "run": run.key, "run_dir": str(run.path.absolute()), "metrics": run.read_metrics(),
        "clusterings": {c.key: (c.metrics_path.is_file() and _read_json(c.metrics_path)) or {}
                        for c in clusterings},
        "brain_keys": brain_keys}}
    dataset.save()
    if brain_keys:
        first = "learned" if "learned" in brain_keys else next(iter(brain_keys))
        fo_int.save_workspace(dataset, WORKSPACE, first, brain_keys[first])
    log.info("FiftyOne dataset %r: %d samples, %d clusterings, brain keys %s (%.1f s: %s)", name, len(dataset),
             len(clusterings), ", ".join(brain_keys) or "none", time.perf_counter() - t0,
             ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return dataset


def _read_json(path: Path) -> Any:
    from sslcluster.store.io import read_json

    return read_json(path)
