"""One metric registry: every figure the evaluation writes is defined in it, and the console table, report.html,
``sslcluster compare``, ``sslcluster runs`` and W&B's summary table show the same headline set from it."""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path

import numpy as np

from sslcluster.evaluation.metrics import cluster_metrics
from sslcluster.evaluation.registry import BY_NAME, HEADLINE, METRICS, lookup, summary_table
from sslcluster.report.run_page import definitions_section, metrics_table
from sslcluster.stages.report import format_table
from sslcluster.tracking.compare import RunResult, compare_runs
from sslcluster.tracking.records import CLUSTERING_METRICS, RUN_METRICS
from sslcluster.tracking.wandb_log import summary_rows

PREFIXES = ("", "pixels_", "timm_res_net_")


def every_figure() -> dict[str, float]:
    """A run's metrics.json with every registered figure for each representation (times and seed once)."""
    out: dict[str, float] = {}
    for i, m in enumerate(METRICS):
        if m.scope == "run":
            out["time_export_s" if m.name == "time_<stage>_s" else m.name] = float(i)
        else:
            out.update({p + m.name: 0.5 + i / 100 for p in PREFIXES})
    return out


def test_every_figure_of_a_clustering_is_registered():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    truth = np.arange(60) % 3
    pred = np.where(np.arange(60) % 7 == 0, -1, np.arange(60) % 4)  # with noise: the *_clustered figures too
    truth[::11] = -1  # unknown labels: n_labeled
    produced = cluster_metrics(x, pred, truth)
    assert "nmi_clustered" in produced and "silhouette" in produced
    assert [k for k in produced if lookup(k) is None] == []
    # the evaluate stage's own additions, the representation's probes, the validation figures
    for key in ("chosen_k", "knn_top1", "linear_top1", "val_nmi", "val_ari", "val_acc", "val_knn_top1", "val_n",
                "time_pretrain_s", "wall_time_s", "seed", "pixels_nmi_clustered", "timm_vit_b_16_knn_top1"):
        assert lookup(key) is not None, key
    assert lookup("var_ratio") is None and lookup("pixels_seed") is None
    # a whole run's metrics.json: tests/test_pipeline.py::test_end_to_end_run_directory


def test_console_html_compare_runs_and_wandb_show_the_same_set():
    metrics = every_figure()
    console = [line.split()[0] for line in format_table(metrics).splitlines()[2:]]
    html = re.findall(r'<td><a href="#def-(\w+)"', metrics_table(metrics))
    comp = compare_runs([RunResult(Path("a"), {"seed": 0}, metrics), RunResult(Path("b"), {"seed": 1}, metrics)])
    wandb_names = [row[0] for row in summary_rows(metrics)[1]]
    assert console == html == wandb_names == list(HEADLINE)
    assert comp.metrics == [p + m for p in PREFIXES for m in HEADLINE]
    # the figures that disagreed between the console and the HTML page are in both
    assert {"ami", "noise_fraction"} <= set(console) and "var_ratio" not in html
    assert set(RUN_METRICS) <= set(HEADLINE) and set(CLUSTERING_METRICS) <= set(HEADLINE)
    # every figure has its definition on the page (and compare's)
    defined = re.findall(r'<dt id="def-([^"]+)"', definitions_section())
    assert [html_lib.unescape(d) for d in defined] == [m.name for m in METRICS]


def test_deltas_only_where_they_mean_something():
    metrics = {"nmi": 0.7, "pixels_nmi": 0.5, "n_clusters": 10, "pixels_n_clusters": 12, "silhouette": 0.2,
               "pixels_silhouette": 0.1, "knn_top1": float("nan"), "pixels_knn_top1": 0.4}
    t = summary_table(metrics)
    deltas = {m.name: d for m, _, d in t.rows}
    assert t.prefixes == ["", "pixels_"] and abs(deltas["nmi"][0] - 0.2) < 1e-12
    assert deltas["n_clusters"] == deltas["silhouette"] == deltas["knn_top1"] == [None]
    assert not BY_NAME["n_clusters"].delta and BY_NAME["n_clusters"].format(10.0) == "10"
    table = format_table(metrics).splitlines()
    assert table[0].split() == ["metric", "learned", "pixels", "Δ", "pixels"]
    assert table[2].split() == ["nmi", "0.7000", "0.5000", "0.2000"]
    assert [line.split()[-1] for line in table[3:]] == ["-", "-", "-"]
