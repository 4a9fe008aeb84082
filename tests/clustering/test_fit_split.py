"""``clustering.fit_split``: the clustering is fitted on one split's embeddings and assigns the clustered split
(SCAN's protocol: fit on train, report test), for every algorithm that can assign new points; the others are
refused in one line, with nothing written. The learned heads (``clustering=scan``, ``clustering=temi``) read
backbone features and mine neighbours on the projection's, never read labels, repeat under a seed, write their
training curve, and refuse bad input in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from sslcluster.cli import main
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_cluster, stage_evaluate
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.rundir import RunDir


def planted(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16) blobs of ``k`` classes (rows in class order, as exports are) and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((k, 16)) * 3
    y = np.sort(np.arange(n) % k)
    return (centres[y] + rng.standard_normal((n, 16))).astype(np.float32), y


def write_split(run: RunDir, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """``embeddings/<split>`` (backbone, 16-d) and ``embeddings/<split>_projection`` (a linear map of it, 8-d), as
    an export of a trained checkpoint leaves them."""
    index = EmbeddingIndex([f"{split}{i}" for i in range(len(y))], [f"sklearn:load_digits[{i}]" for i in range(len(y))],
                           np.asarray(y, dtype=np.int64))
    proj = x @ np.random.default_rng(7).standard_normal((16, 8)).astype(np.float32)
    for name, arr, features in ((split, x, "backbone"), (f"{split}_projection", proj, "projection")):
        write_embeddings(run.embeddings_dir(name), arr, index, split=split, features=features,
                         checkpoint="checkpoints/last.ckpt")


def make_run(root: Path, k: int = 3, splits: tuple[str, ...] = ("train", "test")) -> Path:
    run = RunDir.create(root, "r")
    for i, split in enumerate(splits):
        x, y = planted(240 if split == "train" else 90, k, seed=i)
        write_split(run, split, x, y)
    return run.path


@pytest.fixture
def base(tmp_path):
    return [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.plots.enabled=false",
            "evaluate.linear_probe=false", "clustering.features=projection"]


SCAN = ["clustering=scan", "clustering.algorithm.k=3", "clustering.algorithm.epochs=20", "clustering.algorithm.num_heads=3",
        "clustering.algorithm.num_neighbors=5", "clustering.algorithm.device=cpu", "clustering.algorithm.batch_size=64",
        "clustering.algorithm.optimizer=adam", "clustering.algorithm.lr=0.01"]
TEMI = ["clustering=temi", "clustering.algorithm.k=3", "clustering.algorithm.epochs=20", "clustering.algorithm.num_heads=3",
        "clustering.algorithm.num_neighbors=5", "clustering.algorithm.device=cpu", "clustering.algorithm.batch_size=64",
        "clustering.algorithm.warmup_epochs=2", "clustering.algorithm.lr=0.01", "clustering.algorithm.min_lr=0.01"]


def _labels(run: Path, key: str) -> np.ndarray:
    return np.load(run / "clusters" / key / "labels.npy")


def _record(run: Path, key: str) -> dict:
    return json.loads((run / "clusters" / key / "record.json").read_text())


@pytest.mark.parametrize("option", ["kmeans", "gmm", "som"])
def test_fit_on_train_assigns_test(tmp_path, base, option):
    run = make_run(tmp_path / "runs")
    stage_cluster(compose(base + [f"clustering={option}", "clustering.algorithm.k=3", "clustering.fit_split=train",
                                  "clustering.key=fit"]))
    rec = _record(run, "fit")
    assert rec["fit_split"] == "train" and rec["fit_embeddings"] == "embeddings/train_projection"
    assert rec["embeddings"] == "embeddings/test_projection" and rec["fit_n_points"] == 240 and rec["n_points"] == 90
    labels = _labels(run, "fit")
    assert labels.shape == (90,)
    y = planted(90, 3, seed=1)[1]
    assert normalized_mutual_info_score(y, labels) > 0.9


def test_kmeans_fitted_on_train_is_trained_on_train(tmp_path, base):
    run = make_run(tmp_path / "runs")
    stage_cluster(compose(base + ["clustering=kmeans", "clustering.algorithm.k=3", "clustering.fit_split=train",
                                  "clustering.key=fit"]))
    stage_cluster(compose(base + ["clustering=kmeans", "clustering.algorithm.k=3", "clustering.key=own"]))
    assert _record(run, "fit")["fit_info"]["trained_on"] == 240
    assert _record(run, "own")["fit_info"]["trained_on"] == 90


@pytest.mark.parametrize("option", ["hdbscan", "agglomerative"])
def test_algorithms_that_cannot_assign_are_refused_in_one_line(tmp_path, base, option, capsys):
    run = make_run(tmp_path / "runs")
    with pytest.raises(SSLClusterError, match=rf"clustering.fit_split=train: clustering={option} cannot assign"):
        stage_cluster(compose(base + [f"clustering={option}", "clustering.fit_split=train"]))
    assert not (run / "clusters").exists() or not any((run / "clusters").iterdir())
    assert main(["cluster", *base, f"clustering={option}", "clustering.fit_split=train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clustering.fit_split=train" in err[0]


def test_a_fit_split_that_was_not_exported_is_refused_in_one_line(tmp_path, base):
    run = make_run(tmp_path / "runs", splits=("test",))
    with pytest.raises(SSLClusterError, match=r"clustering.fit_split=train: no train embeddings of projection "
                                              r"features beside .*test_projection") as err:
        stage_cluster(compose(base + ["clustering=kmeans", "clustering.fit_split=train"]))
    assert "\n" not in str(err.value)
    assert not (run / "clusters").exists() or not any((run / "clusters").iterdir())


@pytest.mark.parametrize("heads", [SCAN, TEMI], ids=["scan", "temi"])
def test_heads_fit_on_train_read_backbone_mine_projection(tmp_path, base, heads):
    run = make_run(tmp_path / "runs")
    stage_cluster(compose(base + heads + ["clustering.fit_split=train", "clustering.key=h"]))
    rec = _record(run, "h")
    assert rec["embeddings"] == "embeddings/test" and rec["features"] == "backbone"  # the heads read backbone
    assert rec["fit_embeddings"] == "embeddings/train"
    assert rec.get("mine_embeddings") == ("embeddings/train_projection" if heads is SCAN else None)
    assert rec["fit_info"]["best_head"] in (0, 1, 2) and len(rec["fit_info"]["selection_losses"]) == 3
    y = planted(90, 3, seed=1)[1]
    assert normalized_mutual_info_score(y, _labels(run, "h")) > 0.8  # 20 epochs: the plumbing, not the method
    with open(run / "clusters" / "h" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and [int(r["epoch"]) for r in rows] == list(range(1, 21)) and "loss" in rows[0]
    assert rec["curve"] == "curve.csv"


def test_same_seed_same_assignments(tmp_path, base):
    run = make_run(tmp_path / "runs")
    for key in ("a", "b"):
        stage_cluster(compose(base + SCAN + ["clustering.fit_split=train", f"clustering.key={key}"]))
    assert np.array_equal(_labels(run, "a"), _labels(run, "b"))
    assert _record(run, "a")["fit_info"] == _record(run, "b")["fit_info"]


def _poison_labels(run: Path) -> None:
    """Every index.csv's label column replaced by a seeded random one (what a head reading labels would see)."""
    rng = np.random.default_rng(5)
    for index in run.glob("embeddings/*/index.csv"):
        rows = list(csv.reader(index.open()))
        for row in rows[1:]:
            row[2] = str(rng.integers(0, 3))
        with index.open("w", newline="") as f:
            csv.writer(f).writerows(rows)


@pytest.mark.parametrize("heads", [SCAN, TEMI], ids=["scan", "temi"])
def test_head_training_and_selection_never_read_labels(tmp_path, base, heads):
    run = make_run(tmp_path / "runs")
    stage_cluster(compose(base + heads + ["clustering.fit_split=train", "clustering.key=clean"]))
    _poison_labels(run)
    stage_cluster(compose(base + heads + ["clustering.fit_split=train", "clustering.key=poisoned"]))
    assert np.array_equal(_labels(run, "clean"), _labels(run, "poisoned"))
    clean, poisoned = _record(run, "clean")["fit_info"], _record(run, "poisoned")["fit_info"]
    assert clean == poisoned


def test_over_clustering_is_scored_many_to_one(tmp_path, base):
    run = make_run(tmp_path / "runs")
    stage_cluster(compose(base + SCAN + ["clustering.fit_split=train", "clustering.key=over",
                                         "clustering.algorithm.k=9"]))
    stage_evaluate(compose(base + SCAN + ["clustering.key=over"]))
    m = json.loads((run / "clusters" / "over" / "metrics.json").read_text())
    assert m["n_clusters"] > 3
    assert m["purity"] >= m["acc"] and m["purity"] > 0.9


@pytest.mark.parametrize("override, match", [
    ("clustering.algorithm.k=1", r"clustering.algorithm.k=1 must be an integer of at least 2"),
    ("clustering.algorithm.num_neighbors=240", r"clustering.algorithm.num_neighbors=240 is not below the number of "
                                               r"points \(240\)"),
    ("clustering.algorithm.entropy_weight=-1.0", r"clustering.algorithm.entropy_weight=-1.0 must be >= 0"),
    ("clustering.algorithm.head=conv", r"clustering.algorithm.head='conv': use one of linear, mlp"),
])
def test_bad_head_settings_are_one_line_and_write_nothing(tmp_path, base, override, match, capsys):
    run = make_run(tmp_path / "runs")
    with pytest.raises(SSLClusterError, match=match) as err:
        stage_cluster(compose(base + SCAN + ["clustering.fit_split=train", override]))
    assert "\n" not in str(err.value)
    assert not (run / "clusters").exists() or not any((run / "clusters").iterdir())
    assert main(["cluster", *base, *SCAN, "clustering.fit_split=train", override]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_scan_self_labelling_trains_the_selected_head_on_its_confident_points():
    from sslcluster.clustering.heads.scan import SCANHeads

    x, y = planted(240, 3, seed=0)
    common = dict(k=3, num_heads=2, num_neighbors=5, epochs=10, batch_size=64, optimizer="adam", lr=0.01,
                  device="cpu", features=None, mine_features=None)
    plain = SCANHeads(**common)
    plain.fit(x)
    algo = SCANHeads(**common, self_label_epochs=3, confidence_threshold=0.9, self_label_lr=1e-3,
                     self_label_batch_size=64)
    algo.fit(x)
    assert algo.best_head == plain.best_head  # self-labelling starts from SCAN's selected head
    curve = algo.training_curve()
    assert len(curve) == 13 and all("self_label_ce" in row for row in curve[10:])
    assert all(0 < row["confident_fraction"] <= 1 for row in curve[10:])
    assert normalized_mutual_info_score(y, algo.assign(x)) > 0.9


def test_the_heads_training_curve_is_in_the_report(tmp_path, base):
    from sslcluster.stages.report import write_report

    run = make_run(tmp_path / "runs")
    cfg = compose(base + SCAN + ["clustering.fit_split=train", "clustering.key=h"])
    stage_cluster(cfg)
    stage_evaluate(cfg)
    assert (run / "clusters" / "h" / "plots" / "training_curve.png").is_file()
    html = write_report(cfg, RunDir(run)).read_text()
    assert "clusters/h/plots/training_curve.png" in html


def test_heads_read_their_rows_in_mini_batches_and_blocks(monkeypatch):
    """The heads never read the embeddings whole: mini-batches for training, blocks for mining and predictions."""
    from sslcluster.clustering.heads import common
    from sslcluster.clustering.heads.scan import SCANHeads

    from clustering.test_streaming import RowReader

    monkeypatch.setattr(common, "BLOCK", 100)
    x, y = planted(600, 3, seed=0)
    rows, mine = RowReader(x), RowReader(x[:, :8].copy())
    algo = SCANHeads(k=3, num_heads=2, num_neighbors=5, epochs=3, batch_size=64, device="cpu")
    algo.fit_rows(rows, None, mine)
    assert rows.max_rows <= 100 and algo.trained_on == 600
    assert mine.max_rows == 600  # the mining features are read whole, for faiss
