"""Choosing k: elbow, silhouette and BIC find the planted number of clusters; the cluster stage records the sweep
and the chosen k, draws the curves, and ``sslcluster runs`` shows them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslcluster.cli import main
from sslcluster.clustering.hierarchical import Agglomerative
from sslcluster.clustering.kmeans import KMeans
from sslcluster.clustering.mixture import GaussianMixture
from sslcluster.clustering.select_k import SelectKConfig, elbow_k, sweep_k
from sslcluster.clustering.som import SOM
from sslcluster.config import compose
from sslcluster.pipeline import stage_cluster, stage_evaluate
from tests.clustering.test_clustering_errors import make_run


def planted(k: int = 5, n_per: int = 60, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4.0
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.standard_normal((len(y), dim)) * 0.4).astype(np.float32), y


def test_elbow_rule_on_a_known_curve():
    assert elbow_k([1, 2, 3, 4, 5, 6], [100, 50, 10, 9, 8, 7]) == 3
    assert elbow_k([2, 4, 6, 8], [40, 10, 8, 7]) == 4
    # a large early drop does not hide the later, relatively larger one (raw-curve kneedle would say 4)
    assert elbow_k(list(range(2, 10)), [9873, 5297, 1119, 379, 367, 356, 349, 339]) == 5


@pytest.mark.parametrize("algo,method", [
    (KMeans(k=2, n_init=3), "silhouette"),
    (KMeans(k=2, n_init=3, backend="faiss"), "elbow"),
    (Agglomerative(k=2), "silhouette"),
    (GaussianMixture(k=2, covariance_type="diag", n_init=2), "bic"),
    (SOM(grid=[6, 6], iterations=1500, sigma=1.5, k=2), "silhouette"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_sweep_finds_the_planted_k(algo, method, seed):
    x, _ = planted(k=5, seed=seed)
    result = sweep_k(algo, x, SelectKConfig(method=method, k_min=2, k_max=9))
    assert result["chosen_k"] == 5
    assert result["ks"] == list(range(2, 10))
    assert len(result["wcss"]) == len(result["silhouette"]) == 8
    assert np.all(np.diff(result["wcss"][:4]) < 0)   # WCSS falls until the planted k
    assert algo.k == 2                                  # the caller's algorithm is left as it was
    if method == "bic":
        assert int(np.argmin(result["bic"])) == 3


def test_cluster_stage_records_the_sweep_and_draws_the_curves(tmp_path, capsys):
    x, y = planted(k=4, n_per=25)
    run = make_run(tmp_path / "runs", x, labels=y)
    base = [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.plots.enabled=false",
            "evaluate.linear_probe=false"]
    stage_cluster(compose(base + ["clustering.select_k.method=silhouette", "clustering.select_k.k_max=8",
                                  "clustering.algorithm.n_init=2"]))
    cdir = run / "clusters" / "kmeans-test"
    rec = json.loads((cdir / "record.json").read_text())
    assert rec["select_k"]["method"] == "silhouette" and rec["select_k"]["chosen_k"] == 4
    assert rec["params"]["k"] == 4 and rec["quality"]["n_clusters"] == 4
    assert rec["config"]["select_k"]["k_max"] == 8 and rec["config"]["name"] == "kmeans"
    assert set(rec["times_s"]) == {"preprocess", "select_k", "fit", "quality"}
    png = cdir / "plots" / "select_k.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    stage_evaluate(compose(base))
    m = json.loads((cdir / "metrics.json").read_text())
    assert m["chosen_k"] == 4 and m["nmi"] > 0.95
    capsys.readouterr()
    assert main(["runs", f"run.root={tmp_path / 'runs'}", "r"]) == 0
    out = capsys.readouterr().out
    assert "# clusterings" in out and "kmeans-test" in out and "select_k=silhouette k=4 over 2..8" in out
    assert main(["runs", f"run.root={tmp_path / 'runs'}"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:2] == ["key", "method"] and listing[1].split()[0] == "r"
