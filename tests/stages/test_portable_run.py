"""A run directory is self-contained: moved to another root (or machine) it evaluates to the same metrics."""

from __future__ import annotations

import json
import shutil

from sslcluster.cli import main
from sslcluster.pipeline import run_pipeline


def test_a_moved_run_evaluates_to_the_same_metrics(tiny, compose, tmp_path):
    run = run_pipeline(compose(tiny + ["run.key=moved", "stages.baseline=false"]))
    before = json.loads((run.path / "metrics.json").read_text())
    run.release()
    new_root = tmp_path / "elsewhere"
    new_root.mkdir()
    shutil.move(str(run.path), str(new_root / "moved"))
    assert not run.path.exists()
    # no file of the run names its old location
    for f in (new_root / "moved").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".csv"):
            assert str(run.path) not in f.read_text(errors="replace"), f
    rc = main(["evaluate", "run.key=moved", f"run.root={new_root}", "logger=none",
               "evaluate.plots.enabled=false", "evaluate.linear_probe=false"])
    assert rc == 0
    after = json.loads((new_root / "moved" / "metrics.json").read_text())
    for key in ("nmi", "ari", "acc", "knn_top1", "n_clusters"):
        assert after[key] == before[key], key
    cluster_metrics = json.loads((new_root / "moved" / "clusters" / "kmeans-test" / "metrics.json").read_text())
    assert cluster_metrics["nmi"] == before["nmi"]
