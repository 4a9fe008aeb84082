"""Saved run configs are read in today's layout, whichever version wrote them: an older run's top-level
``cluster`` block (split, features, key, overwrite) is read as ``clustering.*``."""

from __future__ import annotations

import json

import yaml

from sslcluster.store.clusters import Clustering
from sslcluster.store.runconfig import current_layout, own_cluster_key, read_run_config
from sslcluster.tracking.compare import compare_runs, load_run

OLD = {"seed": 0, "data": {"source": {"root": "/data/old"}},
       "cluster": {"split": "all", "features": "backbone", "key": None, "overwrite": False},
       "clustering": {"name": "kmeans", "algorithm": {"k": 10}}}
NEW = {"seed": 0, "data": {"source": {"root": "/data/new"}},
       "clustering": {"name": "kmeans", "algorithm": {"k": 10}, "split": "test", "features": "projection",
                      "key": "mine", "overwrite": False}}


def write_run(path, cfg, metrics=None):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.json").write_text(json.dumps(metrics or {"nmi": 0.5}))
    return path


def test_an_old_layout_is_read_as_the_new_one(tmp_path):
    cfg = current_layout(OLD)
    assert "cluster" not in cfg and cfg["clustering"]["split"] == "all" and cfg["clustering"]["algorithm"]["k"] == 10
    assert current_layout(NEW) == NEW
    assert own_cluster_key(cfg) == "kmeans-all" and own_cluster_key(NEW) == "mine"
    old = write_run(tmp_path / "old", OLD)
    assert read_run_config(old) == cfg
    assert read_run_config(tmp_path / "none") == {}
    (old / "clusters" / "kmeans-all").mkdir(parents=True)
    assert Clustering(old / "clusters" / "kmeans-all").data_root() == "/data/old"


def test_compare_groups_old_and_new_runs_by_the_new_key(tmp_path):
    runs = [load_run(write_run(tmp_path / "old", OLD, {"nmi": 0.4})),
            load_run(write_run(tmp_path / "new", NEW, {"nmi": 0.6}))]
    assert all("cluster.split" not in r.config for r in runs)
    comp = compare_runs(runs, by=["clustering.features"])
    assert sorted(values for values, _ in comp.groups) == [("backbone",), ("projection",)]
