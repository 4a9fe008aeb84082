"""The pixels_umap baseline: UMAP of the raw pixels, fitted on train without labels, every row mapped by the same
function, clustered by the run's algorithm without further preprocessing, scored and reported like the others."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import run_pipeline
from sslcluster.stages.report import report
from sslcluster.stages.pixels_umap import export_pixels_umap, umap_settings
from sslcluster.store.embeddings import read_embeddings


def test_pixels_umap_is_a_scored_baseline(tiny):
    cfg = compose([o for o in tiny if not o.startswith("baselines=")]
                  + ["baselines=[pixels,pixels_umap]", "baseline_umap.fit_rows=600", "baseline_umap.dim=5"])
    run = run_pipeline(cfg)
    metrics = json.loads((run.path / "metrics.json").read_text())
    for key in ("pixels_umap_nmi", "pixels_umap_ari", "pixels_umap_acc", "pixels_umap_knn_top1", "pixels_nmi"):
        assert key in metrics, key
    train = read_embeddings(run.path / "embeddings" / "pixels_umap_train", with_labels=True)
    test = read_embeddings(run.path / "embeddings" / "pixels_umap_test", with_labels=True)
    pixels = read_embeddings(run.path / "embeddings" / "pixels_test", with_labels=True)
    assert train.array.shape[1] == test.array.shape[1] == 5
    assert test.index.ids == pixels.index.ids and np.array_equal(test.index.labels, pixels.index.labels)
    assert train.manifest["umap"]["fit_split"] == "train" and train.manifest["umap"]["fit_rows_used"] == 600
    record = json.loads((run.path / "clusters" / "pixels_umap-kmeans-test" / "record.json").read_text())
    assert record["representation"] == "pixels_umap" and "l2" not in record.get("preprocess", [])
    assert "pixels_umap" in report(run).splitlines()[0]  # a column of the console table
    # a second export with the same settings keeps the files (no second fit)
    before = (run.path / "embeddings" / "pixels_umap_test" / "embeddings.npy").stat().st_mtime_ns
    splits = {s: run.path / "embeddings" / f"pixels_{s}" for s in ("train", "test")}
    export_pixels_umap(cfg, run, splits)
    assert (run.path / "embeddings" / "pixels_umap_test" / "embeddings.npy").stat().st_mtime_ns == before


def test_baseline_umap_settings_are_checked(tiny):
    with pytest.raises(SSLClusterError, match="baseline_umap.dim=1"):
        umap_settings(compose(tiny + ["baseline_umap.dim=1"]))
    with pytest.raises(SSLClusterError, match="baselines entry 'umap'"):
        run_pipeline(compose([o for o in tiny if not o.startswith("baselines=")] + ["baselines=[pixels,umap]"]))
