"""Pictures in ``clusters/<key>/plots/`` and per-cluster folders, through the evaluate stage."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.evaluation import plots
from sslcluster.evaluation.browse import write_cluster_folders
from sslcluster.pipeline import stage_cluster, stage_evaluate
from tests.clustering.test_clustering_errors import make_run

PNG = b"\x89PNG\r\n\x1a\n"


def planted(k: int = 4, n_per: int = 30, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4.0
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.standard_normal((len(y), dim)) * 0.5).astype(np.float32), y


def assert_png(path, min_size=(200, 150)):
    assert path.read_bytes()[:8] == PNG, path
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (path, im.size)
        # not a blank canvas: several distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or range(1 << 20)) > 8


@pytest.fixture
def base(tmp_path):
    return [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.linear_probe=false",
            "evaluate.plots.enabled=true", "evaluate.plots.projections=[pca,tsne]",
            "evaluate.plots.images_per_cluster=5"]


def test_evaluate_draws_scatter_samples_and_confusion(tmp_path, base):
    x, y = planted()
    run = make_run(tmp_path / "runs", x, labels=y)
    stage_cluster(compose(base + ["clustering.algorithm.k=5", "clustering.algorithm.n_init=2"]))
    stage_evaluate(compose(base))
    out = run / "clusters" / "kmeans-test" / "plots"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["confusion.png", "samples.png", "scatter_pca.png", "scatter_tsne.png"]
    for p in out.iterdir():
        assert_png(p)
    assert not list(run.rglob("*.tmp"))


def test_som_u_matrix_and_hit_map(tmp_path, base):
    x, y = planted()
    run = make_run(tmp_path / "runs", x, labels=y)
    som = ["clustering=som", "clustering.algorithm.grid=[5,6]", "clustering.algorithm.iterations=1000",
           "clustering.algorithm.k=4"]
    stage_cluster(compose(base + som))
    stage_evaluate(compose(base + som + ["evaluate.plots.projections=[]", "evaluate.plots.images_per_cluster=0"]))
    out = run / "clusters" / "som-test" / "plots"
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "som_hits.png", "som_umatrix.png"]
    for p in out.iterdir():
        assert_png(p)
    m = json.loads((run / "clusters" / "som-test" / "metrics.json").read_text())
    assert m["nmi"] > 0.9


def test_u_matrix_values():
    w = np.zeros((2, 3, 2))
    w[1, 2] = [3.0, 4.0]   # one node 5 away from its two neighbours
    from sslcluster.clustering.som import u_matrix

    um = u_matrix(w)
    assert um[1, 2] == pytest.approx(5.0)                 # both neighbours at distance 5
    assert um[0, 2] == pytest.approx(5.0 / 2)             # neighbours: (1,2) at 5, (0,1) at 0
    assert um[0, 0] == pytest.approx(0.0)


def test_confusion_and_scatter_direct(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.1, -1, (t + (rng.random(200) < 0.2)) % 4)
    plots.confusion_matrix(t, p, tmp_path / "c.png", class_names=["zero", "one", "two"])
    assert_png(tmp_path / "c.png")
    xy = rng.standard_normal((200, 2))
    plots.scatter_2d(xy, p, t, tmp_path / "s.png", "pca")
    assert_png(tmp_path / "s.png")
    with pytest.raises(SSLClusterError, match="no held-out labels"):
        plots.confusion_matrix(np.full(5, -1), np.zeros(5, dtype=np.int64), tmp_path / "x.png")
    with pytest.raises(SSLClusterError, match="'mds' is not one of umap, pca, tsne"):
        plots.project_2d(xy, "mds")


def test_bad_projection_is_refused_naming_it(tmp_path, base):
    x, y = planted()
    make_run(tmp_path / "runs", x, labels=y)
    stage_cluster(compose(base + ["clustering.algorithm.k=4"]))
    with pytest.raises(SSLClusterError, match="'isomap' is not one of"):
        stage_evaluate(compose(base + ["evaluate.plots.projections=[isomap]"]))


def test_per_cluster_folders_copy_renders_every_image(tmp_path, base):
    x, y = planted()
    run = make_run(tmp_path / "runs", x, labels=y)
    stage_cluster(compose(base + ["clustering.algorithm.k=4"]))
    stage_evaluate(compose(base + ["evaluate.plots.enabled=false", "evaluate.folders=copy"]))
    cdir = run / "clusters" / "kmeans-test"
    labels = np.load(cdir / "labels.npy")
    folders = cdir / "folders"
    for c in np.unique(labels):
        files = sorted((folders / f"cluster_{c}").iterdir())
        assert len(files) == (labels == c).sum()
        with Image.open(files[0]) as im:
            assert im.size == (8, 8)   # the digit itself, rendered from sklearn:load_digits[i]
    manifest = json.loads((folders / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n_images"] == len(labels)


def test_per_cluster_folders_symlink_files_and_noise(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / "imgs" / f"im{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(p)
        paths.append(str(p))
    labels = np.array([0, 0, 1, -1, 1, 2])
    out = write_cluster_folders(tmp_path / "folders", [f"a/{i}" for i in range(6)], paths, labels, "symlink")
    assert sorted(os.listdir(out)) == ["cluster_0", "cluster_1", "cluster_2", "manifest.json", "noise"]
    link = next((out / "noise").iterdir())
    assert link.is_symlink() and link.resolve() == (tmp_path / "imgs" / "im3.png").resolve()
    # rebuilding replaces the tree as a whole
    write_cluster_folders(out, [f"a/{i}" for i in range(6)], paths, np.zeros(6, dtype=np.int64), "copy")
    assert sorted(os.listdir(out)) == ["cluster_0", "manifest.json"]
    assert not any(p.is_symlink() for p in (out / "cluster_0").iterdir())
    with pytest.raises(SSLClusterError, match="evaluate.folders='hardlink'"):
        write_cluster_folders(out, ["a"], paths[:1], np.zeros(1, dtype=np.int64), "hardlink")


@pytest.mark.slow
def test_umap_scatter_on_pipeline_digits(tiny, tmp_path):
    """The default pictures (UMAP scatter) on a real pipeline run; slow because UMAP compiles on first use."""
    from sslcluster.pipeline import run_pipeline

    run = run_pipeline(compose([o for o in tiny if not o.startswith("evaluate.plots")]
                               + ["run.key=u", "stages.baseline=false"]))
    out = run.path / "clusters" / "kmeans-test" / "plots"
    for name in ("scatter_umap.png", "samples.png", "confusion.png"):
        assert_png(out / name)


def test_scatter_colours_clusters_by_their_matched_class():
    # clusters numbered against the classes (cluster c holds class (c + 1) % 3); a fourth cluster splits class 0
    y = np.repeat([0, 1, 2], 20)
    pred = (y + 2) % 3  # class 0 -> cluster 2, class 1 -> cluster 0, class 2 -> cluster 1
    pred[:5] = 3        # part of class 0 in a cluster of its own
    class_colour, colour, marker, match = plots.class_styles(y, pred)
    assert match == {0: 1, 1: 2, 2: 0, 3: 0}
    for c, k in match.items():
        assert colour[c] == class_colour[k], (c, k)
    assert marker[2] != marker[3]  # two clusters of class 0: same colour, told apart by marker
    assert len({str(v) for v in class_colour.values()}) == 3

