"""Research validity of what the cluster and evaluate stages report: internal metrics in one declared space, rows
in a seeded random order before clustering (and mapped back), labels and ids kept aligned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from sslcluster.config import compose
from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.pipeline import stage_cluster
from tests.clustering.test_clustering_errors import make_run

class OrderRecorder(ClusteringAlgorithm):
    """A clustering 'algorithm' that records the rows it is given and labels each row by its own content (column 0
    holds the row's original position), so the test can check the order it saw and the mapping back."""

    def __init__(self, record_path: str, **_: Any) -> None:
        super().__init__()
        self.record_path = record_path  # hydra imports this module apart from pytest's copy: record to a file

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        np.save(self.record_path, np.asarray(x))
        return (np.rint(x[:, 0]).astype(np.int64) % 7)


def test_rows_reach_the_algorithm_shuffled_and_labels_map_back(tmp_path):
    n = 90
    classes = np.repeat(np.arange(3), n // 3)  # exported rows are sorted by class, as a folder split is
    x = np.zeros((n, 4), dtype=np.float32)
    x[:, 0] = np.arange(n)
    x[:, 1] = classes
    run = make_run(tmp_path / "runs", x, classes)
    stage_cluster(compose([f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "clustering.preprocess.l2=false",
                           "clustering.algorithm._target_=tests.test_validity.OrderRecorder",
                           f"+clustering.algorithm.record_path={tmp_path / 'seen.npy'}"]))
    seen = np.load(tmp_path / "seen.npy")[:, 0].astype(int)
    assert sorted(seen.tolist()) == list(range(n))
    # not in the exported (class-sorted) order: the first third is not all one class
    assert len(set(classes[seen[: n // 3]].tolist())) == 3
    labels = np.load(run / "clusters" / "kmeans-test" / "labels.npy")
    np.testing.assert_array_equal(labels, np.arange(n) % 7)  # each row keeps the label computed from its own content
    record = json.loads((run / "clusters" / "kmeans-test" / "record.json").read_text())
    assert record["row_order"].startswith("seeded permutation")


def test_internal_metrics_are_measured_in_one_declared_space(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    classes = np.repeat(np.arange(3), n // 3)
    x = (rng.standard_normal((n, 16)) + 3 * np.eye(16)[classes]).astype(np.float32) * 5.0  # far from the sphere
    run = make_run(tmp_path / "runs", x, classes)
    base = [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "clustering.algorithm.k=3"]
    stage_cluster(compose(base + ["clustering.key=plain"]))
    stage_cluster(compose(base + ["clustering.key=pca", "clustering.preprocess.pca_dim=2"]))
    recs = {k: json.loads((run / "clusters" / k / "record.json").read_text()) for k in ("plain", "pca")}
    for k, rec in recs.items():
        labels = np.load(run / "clusters" / k / "labels.npy")
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)  # the declared space: L2-normalised, before PCA/UMAP
        q = rec["quality"]
        assert q["silhouette"] == pytest.approx(skm.silhouette_score(xn, labels), rel=1e-5), k
        assert q["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(xn, labels), rel=1e-5), k
        assert rec["quality_space"].startswith("l2-normalised embeddings before PCA")
        assert "var_ratio" not in q


# -- held-out split of a folder without train/ and test/ -------------------------------------------------------

def make_digits_folder(root: Path, per_class: int | None = None, classes: int = 10) -> Path:
    """scikit-learn's digits as ``root/<digit>/<index>.png`` (no split folders); ``per_class`` caps each class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    count: dict[int, int] = {}
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        if y >= classes or (per_class is not None and count.get(int(y), 0) >= per_class):
            continue
        count[int(y)] = count.get(int(y), 0) + 1
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(root / str(y) / f"{i:04d}.png")
    return root


FOLDER_RUN = ["data=image_folder", "data.channels=1", "data.mean=[0.5]", "data.std=[0.5]", "data.image_size=16",
              "augmentation=digits", "data.num_workers=0", "data.batch_size=8", "data.scan.cache=false"]


def test_split_less_folder_gets_a_seeded_stratified_held_out_split(tmp_path):
    from sslcluster.data.sources import ImageFolderSource

    root = make_digits_folder(tmp_path / "digits", per_class=20, classes=5)
    tr = ImageFolderSource(str(root), "train", channels=1, cache=False)
    te = ImageFolderSource(str(root), "test", channels=1, cache=False)
    al = ImageFolderSource(str(root), "all", channels=1, cache=False)
    assert not set(tr.paths) & set(te.paths)
    assert sorted(tr.paths + te.paths) == sorted(al.paths) and len(al) == 100
    assert len(te) == 20 and np.bincount(te.labels).tolist() == [4] * 5  # stratified by folder label
    assert tr.classes == te.classes == [str(c) for c in range(5)]
    assert ImageFolderSource(str(root), "test", channels=1, cache=False).paths == te.paths  # seeded
    other = ImageFolderSource(str(root), "test", channels=1, cache=False, holdout_seed=1)
    assert other.paths != te.paths
    # only train/ is handled the same way (and the class is the folder below train/, never "train")
    only = tmp_path / "only"
    make_digits_folder(only / "train", per_class=10, classes=3)
    t1, t2 = (ImageFolderSource(str(only), s, channels=1, cache=False) for s in ("train", "test"))
    assert not set(t1.paths) & set(t2.paths) and len(t1) + len(t2) == 30 and t2.classes == ["0", "1", "2"]


def test_pipeline_on_a_split_less_folder_never_scores_training_images(tmp_path, tiny):
    from sslcluster.pipeline import run_pipeline
    from sslcluster.store.embeddings import read_index

    root = make_digits_folder(tmp_path / "digits", per_class=20, classes=5)
    run = run_pipeline(compose(tiny + FOLDER_RUN + [f"data.source.root={root}", "run.key=f",
                                                    "clustering.algorithm.k=5"]))
    tr, te = (read_index(run.path / "embeddings" / s, with_labels=True) for s in ("train", "test"))
    assert not set(tr.ids) & set(te.ids) and not set(tr.paths) & set(te.paths)
    assert len(tr.ids) == 80 and len(te.ids) == 20
    record = (run.path / "split.csv").read_text().splitlines()
    assert record[0] == "id,split" and len(record) == 101
    assert str(root) not in "".join(record)  # relative ids only: the run stays portable


def test_split_record_is_reused_by_later_stages(tmp_path, tiny):
    from sslcluster.pipeline import run_pipeline, stage_export
    from sslcluster.store.embeddings import read_index

    root = make_digits_folder(tmp_path / "digits", per_class=10, classes=3)
    base = tiny + FOLDER_RUN + [f"data.source.root={root}", "clustering.algorithm.k=3"]
    run = run_pipeline(compose(base + ["run.key=f", "stages.baseline=false"]))
    rows = (run.path / "split.csv").read_text().splitlines()
    moved = next(r for r in rows[1:] if r.endswith(",test")).split(",")[0]
    (run.path / "split.csv").write_text("\n".join(r if not r.startswith(moved + ",") else f"{moved},train"
                                                  for r in rows) + "\n")
    stage_export(compose(base + ["run.key=f", "export.splits=[train,test]", "run.overwrite=false"]))
    assert moved in read_index(run.path / "embeddings" / "train", with_labels=True).ids
    assert moved not in read_index(run.path / "embeddings" / "test", with_labels=True).ids


def test_cluster_split_all_clusters_every_image(tmp_path, tiny):
    from sslcluster.pipeline import run_pipeline

    root = make_digits_folder(tmp_path / "digits", per_class=10, classes=3)
    run = run_pipeline(compose(tiny + FOLDER_RUN + [f"data.source.root={root}", "run.key=a", "clustering.split=all",
                                                    "clustering.algorithm.k=3", "evaluate.folders=symlink",
                                                    "stages.baseline=false"]))
    labels = np.load(run.path / "clusters" / "kmeans-all" / "labels.npy")
    assert labels.shape == (30,)
    linked = sorted(p.resolve() for p in (run.path / "clusters" / "kmeans-all" / "folders").rglob("*.png"))
    assert linked == sorted(p.resolve() for p in root.rglob("*.png"))


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2"])
def test_bad_holdout_fraction_stops_with_one_line_and_writes_nothing(tmp_path, tiny, fraction):
    from sslcluster.errors import SSLClusterError
    from sslcluster.pipeline import run_pipeline

    root = make_digits_folder(tmp_path / "digits", per_class=5, classes=3)
    with pytest.raises(SSLClusterError) as e:
        run_pipeline(compose(tiny + FOLDER_RUN + [f"data.source.root={root}", f"data.holdout_fraction={fraction}"]))
    msg = str(e.value)
    assert "\n" not in msg and f"data.holdout_fraction={float(fraction)!r}" in msg.replace(f"={fraction}", f"={float(fraction)!r}")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_folder_too_small_to_hold_out_a_class_stops_with_one_line_and_writes_nothing(tmp_path, tiny):
    from sslcluster.errors import SSLClusterError
    from sslcluster.pipeline import run_pipeline

    root = make_digits_folder(tmp_path / "digits", per_class=1, classes=3)  # one image per class
    with pytest.raises(SSLClusterError) as e:
        run_pipeline(compose(tiny + FOLDER_RUN + [f"data.source.root={root}", "run.key=small"]))
    msg = str(e.value)
    assert "\n" not in msg and "data.holdout_fraction=0.2" in msg and "smallest 1" in msg
    assert not (tmp_path / "runs" / "small").exists()


# -- tuning on validation data ---------------------------------------------------------------------------------

def test_validation_figures_come_from_the_train_split_and_sweeps_maximise_them(tmp_path, tiny):
    import yaml

    from sslcluster.pipeline import run_pipeline
    from sslcluster.stages.evaluate import validation_rows
    from sslcluster.store.embeddings import read_index

    run = run_pipeline(compose(tiny + ["run.key=v", "stages.baseline=false"]))
    m = json.loads((run.path / "metrics.json").read_text())
    for key in ("val_nmi", "val_ari", "val_acc", "val_knn_top1"):
        assert key in m, key
    train = read_index(run.path / "embeddings" / "train", with_labels=True)
    test = read_index(run.path / "embeddings" / "test", with_labels=True)
    val = validation_rows(train.labels, 0.1)
    assert m["val_n"] == len(val) == 144
    assert not {train.ids[i] for i in val} & set(test.ids)  # validation images are train images, never test ones
    # the validation figures are not the test figures under another name
    assert m["val_nmi"] != m["nmi"]
    sweep = yaml.safe_load((Path(__file__).parents[1] / "configs" / "wandb_sweep.yaml").read_text())
    assert sweep["metric"]["name"].startswith("val_")


# -- defaults name their sources and match them ----------------------------------------------------------------

LIGHTLY_CIFAR10 = {"name": "sgd", "lr": 0.06, "base_batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4,
                   "warmup_epochs": 0}


@pytest.mark.parametrize("method,temperature", [("simclr", 0.5), ("moco", 0.1)])
def test_cifar10_presets_follow_lightlys_benchmark(method, temperature):
    cfg = compose([f"+experiment=cifar10_{method}", "data.source.root=x"])
    assert dict(cfg.method.optim) == LIGHTLY_CIFAR10
    assert cfg.method.module.temperature == temperature and cfg.method.module.output_dim == 128
    assert cfg.method.module.hidden_dim == 512 and cfg.augmentation.name == "simclr"
    assert cfg.augmentation.views.gaussian_blur == 0.0 and cfg.data.batch_size == 128
    assert cfg.backbone.name == "resnet18" and cfg.backbone.module.cifar_stem
    if method == "moco":
        m = cfg.method.module
        assert (m.queue_size, m.momentum, m.momentum_end, m.key_bn_splits, m.query_bn_splits) == (4096, 0.99, None, 8, 8)


def test_moco_defaults_are_mocov2s_and_its_views_name_their_source():
    cfg = compose(["method=moco", "augmentation=moco"])
    m = cfg.method.module
    assert (m.momentum, m.momentum_end, m.temperature, m.key_bn_splits, m.query_bn_splits) == (0.999, None, 0.2, 8, 8)
    assert (cfg.method.optim.lr, cfg.method.optim.base_batch_size, cfg.method.optim.weight_decay) == (0.03, 256, 1e-4)
    head = (Path(__file__).parents[1] / "configs" / "augmentation" / "moco.yaml").read_text().split("name:")[0]
    assert "MoCo v2 paper" in head and "as in lightly's CIFAR-10 benchmark:" not in head
