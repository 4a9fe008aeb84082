"""Runs made before the records named their representation and primary clustering, and before the clustering
stage's settings moved under ``clustering``, are read and evaluated as the runs made today."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from sslcluster.cli import main
from sslcluster.pipeline import run_pipeline, stage_cluster
from sslcluster.store.clusters import Clustering

STAGE_KEYS = ("split", "features", "key", "overwrite")


def to_old_layout(config_path) -> None:
    """Rewrite a run's ``config.yaml`` as older runs saved it: the clustering stage's settings in a top-level
    ``cluster`` block."""
    cfg = yaml.safe_load(config_path.read_text())
    moved = {k: cfg["clustering"].pop(k) for k in STAGE_KEYS if k in cfg["clustering"]}
    cfg["cluster"] = {**cfg.get("cluster", {}), **moved}
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_a_legacy_run_evaluates_to_the_summary_of_the_run_as_made(tiny, compose, tmp_path):
    root = tmp_path / "runs"
    run = run_pipeline(compose(tiny + ["run.key=new", "clustering.key=mine", "report.enabled=false"]))
    before = json.loads((run.path / "metrics.json").read_text())
    run.release()
    legacy = root / "legacy"
    shutil.copytree(run.path, legacy)
    # a clustering added later: its metrics never enter the summary
    stage_cluster(compose(tiny + ["run.key=legacy", "clustering=gmm", "clustering.key=gmm5",
                                  "clustering.algorithm.k=5"]))
    # what an older version wrote: no representation / primary in the records, the old config layout, and a
    # summary without the clusterings' metrics
    for rec_path in legacy.glob("clusters/*/record.json"):
        rec = json.loads(rec_path.read_text())
        rec.pop("representation", None)
        rec.pop("primary", None)
        rec_path.write_text(json.dumps(rec))
    to_old_layout(legacy / "config.yaml")
    cluster_keys = set(json.loads((legacy / "clusters" / "mine" / "metrics.json").read_text()))
    stripped = {k for k in before if k in cluster_keys or (k.startswith("pixels_") and k[7:] in cluster_keys)}
    assert {"nmi", "acc", "n_clusters", "pixels_nmi", "pixels_n_clusters"} <= stripped
    (legacy / "metrics.json").write_text(json.dumps({k: v for k, v in before.items() if k not in stripped}))

    found = {c.key: (c.read_record().get("representation"), c.read_record().get("primary"))
             for c in [Clustering(p) for p in sorted((legacy / "clusters").iterdir())]}
    assert found == {"mine": ("learned", True), "pixels-mine": ("pixels", True), "gmm5": ("learned", False)}

    assert main(["evaluate", f"run.root={root}", "run.key=legacy", "logger=none", "evaluate.plots.enabled=false",
                 "evaluate.linear_probe=false", "report.enabled=false"]) == 0
    after = json.loads((legacy / "metrics.json").read_text())
    for key in sorted(stripped):
        assert after.get(key) == pytest.approx(before[key], abs=1e-12), key
    assert after["n_clusters"] == 10  # the run's own k-means, not the later GMM
