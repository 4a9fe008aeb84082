"""The FiftyOne integration with the real ``fiftyone`` package and its local database (the ``fiftyone`` extra,
installed by ``.ci/run``): a run loaded into FiftyOne, a FiftyOne dataset as the training images, outside text.

Skipped, with the reason, only where the package is missing or its database cannot start. The database lives in a
temporary folder of the test session (``FIFTYONE_DATABASE_DIR``), never the user's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import run_pipeline, stage_fiftyone
from sslcluster.store.io import file_sha256


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    """The fiftyone module on a database of its own in a temporary folder (skips with the reason otherwise)."""
    os.environ["FIFTYONE_DATABASE_DIR"] = str(tmp_path_factory.mktemp("fiftyone-db"))
    from sslcluster.integrations.fiftyone import import_fiftyone

    try:
        return import_fiftyone()
    except SSLClusterError as e:
        pytest.skip(str(e))


def _tiny(root: Path) -> list[str]:
    return [f"run.root={root}", "trainer.max_epochs=1", "data.batch_size=64", "backbone.module.width=8",
            "backbone.module.depth=2", "logger=none", "clustering.algorithm.n_init=1", "evaluate.linear_probe=false",
            "export.batch_size=256", "clustering.features=backbone", "report.enabled=false",
            "evaluate.validation.fraction=0", "baselines=[pixels]"]


# the LLM's name and description of cluster 0: quotes, markup, an ampersand, a non-ASCII letter
OUTSIDE_NAME = 'Loops "and" <b>tails</b> & \'stems\' — ö'
OUTSIDE_TEXT = "<script>alert('x')</script>\nsecond line"


@pytest.fixture(scope="module")
def digits_run(fo, tmp_path_factory):
    """A tiny digits run (learned + pixels, k-means on the test split) whose clusters 0 of kmeans-test got an LLM
    name with quotes and markup, loaded into FiftyOne once."""
    from sslcluster.config import compose

    root = tmp_path_factory.mktemp("runs")
    # PCA scatter (no UMAP compile): the run's own 2-D points for the learned representation's brain key
    cfg = compose(_tiny(root) + ["run.key=dig", "evaluate.plots.projections=[pca]",
                                 "evaluate.plots.images_per_cluster=0", "fiftyone.method=pca"])
    run = run_pipeline(cfg)
    cdir = run.path / "clusters" / "kmeans-test"
    (cdir / "names.json").write_text(json.dumps({
        "labels_sha256": file_sha256(cdir / "labels.npy"),
        "clusters": {"0": {"name": OUTSIDE_NAME, "description": OUTSIDE_TEXT, "images": []}}}))
    (run.path / "clusters" / "pixels-kmeans-test" / "projection_pca.npz").unlink()  # Brain computes this one
    run.release()
    stage_fiftyone(cfg)
    return cfg, run


def _by_path(dataset, field: str) -> dict[str, object]:
    ids, paths, values = dataset.values(["id", "filepath", field])
    return dict(zip(paths, values))


def test_digits_run_loaded_into_fiftyone(fo, digits_run):
    cfg, run = digits_run
    ds = fo.load_dataset(run.key)
    assert ds.persistent
    test = run.embeddings("test").index(with_labels=True)
    train = run.embeddings("train").index(with_labels=True)
    assert len(ds) == len(test) + len(train)  # one sample per exported image
    gt = ds.values("ground_truth.label")
    assert sorted(gt) == sorted([str(c) for c in test.labels] + [str(c) for c in train.labels])
    # rows of the run -> samples: the export's image of each id (the digits are written as PNG files)
    from sslcluster.stages.fiftyone_export import media_paths

    files = media_paths(run, test.ids, test.paths)
    for key in ("kmeans-test", "pixels-kmeans-test"):
        labels = np.load(run.path / "clusters" / key / "labels.npy")
        got = _by_path(ds, key)
        assert [got[f]["cluster_id"] for f in files] == labels.tolist()
        assert sum(v is not None for v in got.values()) == len(labels)  # the train split is not clustered
    truth = _by_path(ds, "ground_truth")
    assert [truth[f]["label"] for f in files] == [str(c) for c in test.labels]
    assert ds.count_sample_tags() == {"train": len(train), "test": len(test)}
    # brain keys: the learned representation from the run's own PCA points, pixels computed by Brain
    assert set(ds.list_brain_runs()) == {"learned", "pixels"}
    for key in ("learned", "pixels"):
        results = ds.load_brain_results(key)
        assert results.points.shape == (len(test), 2)
    kept = np.load(run.path / "clusters" / "kmeans-test" / "projection_pca.npz")
    learned = ds.load_brain_results("learned")
    ids = [dict(zip(ds.values("filepath"), ds.values("id")))[f] for f in files]
    point_of = dict(zip(learned.current_sample_ids, learned.current_points))
    np.testing.assert_array_equal(np.stack([point_of[i] for i in np.asarray(ids)[kept["rows"]]]), kept["xy"])
    info = ds.info["sslcluster"]
    assert info["run"] == run.key and info["metrics"]["nmi"] == run.read_metrics()["nmi"]
    assert set(info["clusterings"]) == {"kmeans-test", "pixels-kmeans-test"}
    assert ds.has_workspace("sslcluster")


def test_second_call_updates_without_duplicates(fo, digits_run):
    cfg, run = digits_run
    ds = fo.load_dataset(run.key)
    before = sorted(ds.values("id"))
    stage_fiftyone(cfg)
    ds.reload()
    assert sorted(ds.values("id")) == before
    assert set(ds.list_brain_runs()) == {"learned", "pixels"}


def test_llm_name_with_quotes_and_markup_arrives_unchanged(fo, digits_run):
    cfg, run = digits_run
    ds = fo.load_dataset(run.key)
    zero = [v for v in ds.values("kmeans-test") if v is not None and v["cluster_id"] == 0]
    assert zero and all(v["name"] == OUTSIDE_NAME and v["label"] == OUTSIDE_NAME for v in zero)
    assert all(v["description"] == OUTSIDE_TEXT for v in zero)
    others = [v for v in ds.values("kmeans-test") if v is not None and v["cluster_id"] != 0]
    assert all(v["label"] == str(v["cluster_id"]) and "name" not in v.to_dict() for v in others)


def _image_folder(root: Path) -> Path:
    """40 digits as PNG files in class folders, file names with spaces, quotes and a non-ASCII letter, and one
    truncated file (a bad file both sources must skip)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for cls in (1, 7):
        rows = np.flatnonzero(digits.target == cls)[:20]
        for k, i in enumerate(rows):
            name = f"digit {cls} no. {k}.png" if k % 3 else f"it's \"{k}\" ö.png"
            path = root / f"class {cls}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L").resize((16, 16)).save(path)
    (root / "class 1" / "broken file.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return root


def test_fiftyone_dataset_trains_to_the_folders_embeddings(fo, tmp_path):
    from sslcluster.config import compose

    folder = _image_folder(tmp_path / "images")
    files = sorted(p for p in folder.rglob("*.png"))
    ds = fo.Dataset("sslcluster-test-folder")
    # added in reverse order: the source orders the samples as a folder scan does
    ds.add_samples([fo.Sample(filepath=str(p), ground_truth=fo.Classification(label=p.parent.name))
                    for p in reversed(files)])
    ds.persistent = True
    common = _tiny(tmp_path / "runs") + ["data.image_size=16", "data.num_workers=0", "data.channels=1",
                                         "data.mean=[0.5]", "data.std=[0.5]", "data.num_classes=2",
                                         "clustering.algorithm.k=2", "evaluate.plots.enabled=false",
                                         "stages.baseline=false", "data.holdout_fraction=0.25", "data.batch_size=16",
                                         "data.scan.cache=false", "evaluate.knn_k=5",
                                         "augmentation=digits"]  # the same views (an image folder's are auto)
    by_folder = run_pipeline(compose(common + ["run.key=folder", "data=image_folder",
                                               f"data.source.root={folder}"]))
    by_fiftyone = run_pipeline(compose(common + ["run.key=fo", "data=fiftyone", f"data.source.dataset={ds.name}",
                                                 "data.source.label_field=ground_truth"]))
    ids_of = dict(zip(ds.values("filepath"), ds.values("id")))
    # the dataset gets the folder's data-aware defaults (precision, layout, data path, clustered split)
    from sslcluster.store.runconfig import read_run_config
    data_folder, data_fo = (read_run_config(r.path)["data"] for r in (by_folder, by_fiftyone))
    for key in ("precision", "channels_last", "pipeline", "cluster_split"):
        assert data_fo[key] == data_folder[key] != "auto", key
    for split in ("train", "test"):
        a = by_folder.embeddings(split).read(with_labels=True)
        b = by_fiftyone.embeddings(split).read(with_labels=True)
        assert b.index.paths == a.index.paths  # same images, same order, same held-out split
        assert b.index.ids == [ids_of[p] for p in a.index.paths]  # ids are the FiftyOne sample ids
        assert b.index.classes == a.index.classes == ["class 1", "class 7"]
        np.testing.assert_array_equal(b.index.labels, a.index.labels)
        np.testing.assert_allclose(b.array, a.array, rtol=0, atol=1e-6)
    for run in (by_folder, by_fiftyone):  # the same bad-file policy: the truncated file is left out and listed
        rows = (run.path / "skipped_files.csv").read_text()
        assert "broken file.png" in rows
        assert "broken file.png" not in (run.path / "embeddings" / "train" / "index.csv").read_text()
    # the held-out split is recorded in the run (sample ids) and the folder's and the dataset's agree
    split_fo = dict(line.split(",", 1) for line in (by_fiftyone.path / "split.csv").read_text().splitlines()[1:])
    assert set(split_fo) == set(ids_of[p] for p in map(str, files) if "broken" not in p)
    assert by_folder.read_metrics()["nmi"] == pytest.approx(by_fiftyone.read_metrics()["nmi"], abs=1e-9)
    # file names with spaces and quotes arrive unchanged, in FiftyOne and back from a run of it
    stage_fiftyone(compose([f"run.root={tmp_path / 'runs'}", "run.key=fo", "fiftyone.method=pca"]))
    loaded = fo.load_dataset("fo")
    assert sorted(loaded.values("filepath")) == sorted(str(p) for p in files if "broken" not in p.name)
    assert any("it's \"0\" ö.png" in p for p in loaded.values("filepath"))
    # written back onto the dataset trained on: the same samples (by sample id), none added, its own labels kept
    # (one relabelled by hand, one unlabelled: the run fills only the empty one)
    first, second = ds.values("id")[:2]
    for sid, value in ((first, fo.Classification(label="relabelled by hand", confidence=0.5)), (second, None)):
        sample = ds[sid]
        sample["ground_truth"] = value
        sample.save()
    assert ds.count("ground_truth") == len(files) - 1
    stage_fiftyone(compose([f"run.root={tmp_path / 'runs'}", "run.key=fo", f"fiftyone.dataset={ds.name}",
                            "fiftyone.brain=false"]))
    ds.reload()
    assert len(ds) == len(files)
    test = by_fiftyone.embeddings("test").index()
    labels = np.load(by_fiftyone.path / "clusters" / "kmeans-test" / "labels.npy")
    got = dict(zip(ds.values("id"), ds.values("kmeans-test.cluster_id")))
    assert [got[i] for i in test.ids] == labels.tolist()
    assert ds[first]["ground_truth"]["label"] == "relabelled by hand" and ds[first]["ground_truth"]["confidence"] == 0.5
    path_second = ds[second]["filepath"]
    exported = [p for s in ("train", "test") for p in by_fiftyone.embeddings(s).index().paths]
    assert (ds[second]["ground_truth"] is not None) == (path_second in exported)


def test_saved_view_and_missing_names_are_one_line_errors(fo, tmp_path):
    from sslcluster.data.fiftyone_source import FiftyOneSource

    folder = _image_folder(tmp_path / "images")
    ds = fo.Dataset("sslcluster-test-view")
    ds.add_samples([fo.Sample(filepath=str(p), ground_truth=fo.Classification(label=p.parent.name),
                              tags=["test" if k % 4 == 0 else "train"])
                    for k, p in enumerate(sorted(folder.rglob("*.png")))])
    ds.save_view("sevens", ds.match(fo.ViewField("ground_truth.label") == "class 7"))
    src = FiftyOneSource(ds.name, split="all", view="sevens", label_field="ground_truth", cache=False)
    assert len(src) == 20 and src.classes == ["class 7"]
    # the samples' own train/test tags are the splits (as a folder's train/ and test/ sub-folders)
    test = FiftyOneSource(ds.name, split="test", cache=False)
    assert set(test.ids) == set(ds.match_tags("test").values("id")) - set(ds.match(
        fo.ViewField("filepath").ends_with("broken file.png")).values("id"))
    with pytest.raises(SSLClusterError, match=r"data.source.dataset='nope'"):
        FiftyOneSource("nope")
    with pytest.raises(SSLClusterError, match=r"data.source.view='nope'"):
        FiftyOneSource(ds.name, view="nope")
    with pytest.raises(SSLClusterError, match=r"data.source.label_field='nope'"):
        FiftyOneSource(ds.name, label_field="nope")
    with pytest.raises(SSLClusterError, match=r"data.bad_files=fail"):
        FiftyOneSource(ds.name, bad_files="fail", cache=False)


def test_missing_package_is_a_one_line_error_naming_the_extra(monkeypatch):
    from sslcluster.integrations import fiftyone as integration

    monkeypatch.setitem(sys.modules, "fiftyone", None)  # import fiftyone raises ImportError
    with pytest.raises(SSLClusterError, match=r'pip install -e "\.\[fiftyone\]"'):
        integration.import_fiftyone()


def test_database_that_cannot_start_is_a_one_line_error(fo, tmp_path):
    # a child process (FiftyOne connects once per process), pointed at a port where no database listens
    code = ("import sys\nfrom sslcluster.errors import SSLClusterError\n"
            "from sslcluster.integrations.fiftyone import import_fiftyone\n"
            "try:\n    import_fiftyone()\nexcept SSLClusterError as e:\n    print(e)\n    sys.exit(2)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    env["FIFTYONE_DATABASE_URI"] = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "database could not start" in lines[0] and ".[fiftyone]" in lines[0], out.stdout
