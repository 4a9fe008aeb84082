"""``runs/<key>/report.html``: one page for a run, read offline from the file system.

Sections: the metrics table (learned representation beside the raw-pixel baseline and any other baseline, each
metric linked to its definition), then per clustering its pictures (scatter plots, k-selection curve, confusion
matrix, SOM maps) and a gallery per cluster (size, name and description when named, majority held-out label and
purity, thumbnails nearest the centroid first, a bounded number and a count of the rest, a link to the
per-cluster folder when made), and at the end the run's config and stage times. Pictures are linked where the
evaluation wrote them (``clusters/<key>/plots/``); thumbnails live in ``report/thumbs/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from sslcluster.evaluation.metrics import cluster_to_class
from sslcluster.report.gallery import ClusterCard, cluster_cards
from sslcluster.report.html import esc, fmt, page, table, url
from sslcluster.store.io import read_json, write_text
from sslcluster.store.representations import baseline_prefixes, display_name

log = logging.getLogger(__name__)

REPORT = "report.html"

#: the metrics table's rows, in order, and their definitions (the page's "Metric definitions" section).
DEFINITIONS: dict[str, str] = {
    "nmi": "Normalised mutual information between clusters and held-out classes (scikit-learn, arithmetic "
           "normalisation): 0 for independent partitions, 1 for identical ones. Noise counts as one more cluster.",
    "ami": "Adjusted mutual information: NMI corrected for chance (0 expected for a random partition).",
    "ari": "Adjusted Rand index: agreement of pairs of points (same / different cluster vs class), corrected for "
           "chance; 0 random, 1 identical.",
    "acc": "Clustering accuracy: fraction of points whose cluster maps to their class under the one-to-one "
           "Hungarian assignment (as in SCAN); with more clusters than classes the many-to-one majority mapping. "
           "Noise points count as errors.",
    "purity": "Each cluster takes its majority class (many-to-one); fraction of points in their cluster's "
              "majority class. Noise points count as errors.",
    "silhouette": "Mean silhouette coefficient (-1..1) of the non-noise points in the clustered space; no labels "
                  "used. Higher: tighter, better separated clusters.",
    "var_ratio": "Inter-cluster variance divided by intra-cluster variance in the clustered space; no labels used.",
    "knn_top1": "Top-1 accuracy of a weighted kNN classifier (k=200, T=0.1, cosine on L2-normalised backbone "
                "features, as lightly's benchmarks) with the train split as memory bank, scored on the test split.",
    "linear_top1": "Top-1 accuracy on the test split of a logistic-regression probe fitted on the train split's "
                   "frozen, standardised features.",
    "n_clusters": "Number of clusters found (noise excluded).",
    "noise_fraction": "Fraction of points labelled noise (-1) by the clustering (density-based algorithms).",
}

#: prefixes of the fixed baseline representations in ``metrics.json`` (``pixels_nmi``, ...); pretrained baselines
#: (``timm_<model>_nmi``) are found in the keys (:func:`sslcluster.store.representations.baseline_prefixes`).
BASELINES = ("pixels_",)


@dataclass
class ReportOptions:
    """``report.*`` of the config."""

    images_per_cluster: int = 12  # thumbnails per cluster (the rest counted); enough to judge a cluster at a glance
    max_clusters: int = 100       # galleries shown per clustering (largest first); the rest counted
    thumb_size: int = 64          # pixels, a side; CIFAR-sized images stay sharp
    seed: int = 0


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """Rows of :data:`DEFINITIONS` present in ``metrics``: learned, each baseline present, and learned minus it."""
    bases = [p for p in BASELINES if any(k.startswith(p) for k in metrics)]
    bases += [p for p in baseline_prefixes(metrics, DEFINITIONS) if p not in bases]
    header = ["metric", "learned"] + [display_name(b) for b in bases] + [f"learned − {display_name(b)}" for b in bases]
    rows = []
    for key in DEFINITIONS:
        if key not in metrics and not any(b + key in metrics for b in bases):
            continue
        a = metrics.get(key)
        cells = [f'<td><a href="#def-{esc(key)}" title="{esc(DEFINITIONS[key])}">{esc(key)}</a></td>',
                 f'<td class="num">{esc(fmt(a))}</td>']
        deltas = []
        for b in bases:
            v = metrics.get(b + key)
            cells.append(f'<td class="num">{esc(fmt(v))}</td>')
            if key not in ("n_clusters", "noise_fraction") and isinstance(a, (int, float)) \
                    and isinstance(v, (int, float)) and not (np.isnan(a) or np.isnan(v)):
                d = float(a) - float(v)
                cls = "better" if d > 0 else "worse" if d < 0 else ""
                deltas.append(f'<td class="num {cls}">{d:+.4f}</td>')
            else:
                deltas.append('<td class="num">-</td>')
        rows.append(cells + deltas)
    return table(header, rows)


def definitions_section() -> str:
    """HTML section listing the metric definitions, each with an anchor ``def-<name>``."""
    items = "".join(f'<dt id="def-{esc(k)}">{esc(k)}</dt><dd>{esc(v)}</dd>' for k, v in DEFINITIONS.items())
    return f'<h2 id="definitions">Metric definitions</h2><dl>{items}</dl>'


PLOT_ORDER = ("scatter_", "select_k", "training_curve", "confusion", "som_")


def _plots(run_path: Path, cluster_dir: Path) -> list[Path]:
    pngs = sorted((cluster_dir / "plots").glob("*.png"))
    ranked = [p for pre in PLOT_ORDER for p in pngs if p.stem.startswith(pre)]
    return ranked  # samples.png is left out: the gallery below shows the clusters better


def _card_html(card: ClusterCard) -> str:
    title = "noise" if card.cluster < 0 else f"cluster {card.cluster}"
    head = esc(title) + (f": {esc(card.name)}" if card.name else "")
    facts = [f"{card.size} images"]
    if card.majority_label is not None:
        facts.append(f"majority label {card.majority_label} (purity {card.purity:.2f})")
    if card.matched_class is not None and card.matched_class != card.majority_label:
        facts.append(f"matched to {card.matched_class}")
    parts = [f'<div class="cluster" id="c{card.cluster}"><h4>{head}</h4>',
             f'<p class="muted">{esc(" · ".join(facts))}</p>']
    if card.description:
        parts.append(f"<p>{esc(card.description)}</p>")
    thumbs = []
    for m in card.members:
        label = f"{m.id} ({m.path})" if m.id != m.path else m.path
        if m.thumb is None:
            thumbs.append(f'<span class="muted" title="{esc(label)}">[unreadable]</span>')
        else:
            thumbs.append(f'<img src="{url(m.thumb)}" alt="{esc(label)}" title="{esc(label)}" loading="lazy">')
    if card.more > 0:
        thumbs.append(f'<span class="more">and {card.more} more</span>')
    parts.append(f'<div class="thumbs">{"".join(thumbs)}</div>')
    if card.folder:
        parts.append(f'<p><a href="{url(card.folder)}">all {card.size} images: {esc(card.folder)}</a></p>')
    parts.append("</div>")
    return "".join(parts)


def clustering_section(run_path: Path, cluster_dir: Path, options: ReportOptions, load: Callable[[str], Any],
                       truth: Callable[[Any], np.ndarray | None]) -> str:
    """One clustering: its record's facts, its metrics, pictures and galleries."""
    from sslcluster.naming import read_names
    from sslcluster.store.clusters import Clustering

    key = cluster_dir.name
    clustering = Clustering(cluster_dir)
    record, pred = clustering.load()
    index = clustering.index(record, pred, with_labels=True)
    labels_true = truth(index)
    m = read_json(cluster_dir / "metrics.json") if (cluster_dir / "metrics.json").is_file() else {}
    matched: dict[int, int] = {}
    if labels_true is not None and (labels_true >= 0).any():
        known = labels_true >= 0
        matched = cluster_to_class(labels_true[known], pred[known], "hungarian")
    try:
        names = read_names(cluster_dir)
    except Exception as e:  # an unreadable names.json: the report still shows the clustering
        log.warning("report: ignoring names of %s: %s", key, e)
        names = {}
    emb = clustering.embeddings(record).path
    facts = [f"{record.get('algorithm')} on {emb.name} ({record.get('features', '?')} features)",
             f"preprocess {'+'.join(record.get('preprocess') or []) or 'none'}",
             f"{len(pred)} images", f"status {record.get('status')}"]
    if record.get("select_k"):
        facts.append(f"k chosen by {record['select_k'].get('method')}: {record['select_k'].get('chosen_k')}")
    out = [f'<h2 id="clustering-{esc(key)}">Clustering {esc(key)}</h2>', f'<p class="muted">{esc(" · ".join(facts))}</p>']
    if m:
        shown = [k for k in DEFINITIONS if k in m]
        out.append(table(shown, [[f'<td class="num">{esc(fmt(m[k]))}</td>' for k in shown]]))
    plots = _plots(run_path, cluster_dir)
    if plots:
        figs = "".join(f'<figure><img class="plot" src="{url(p.relative_to(run_path))}" alt="{esc(p.stem)}">'
                       f"<figcaption>{esc(p.name)}</figcaption></figure>" for p in plots)
        out.append(f'<div class="plots">{figs}</div>')
    else:
        out.append('<p class="muted">No pictures (evaluate.plots.enabled=false).</p>')
    cards, left_out = cluster_cards(run_path, cluster_dir, record, pred, index.ids, index.paths, labels_true,
                                    index.classes, names, matched, load, per_cluster=options.images_per_cluster,
                                    max_clusters=options.max_clusters, seed=options.seed,
                                    thumb_size=options.thumb_size)
    out.append(f"<h3>Clusters of {esc(key)} (largest first; thumbnails nearest the centroid first)</h3>")
    out += [_card_html(c) for c in cards]
    if left_out:
        out.append(f'<p class="muted">and {left_out} smaller clusters not shown (report.max_clusters='
                   f"{options.max_clusters})</p>")
    return "\n".join(out)


def write_run_report(run_path: str | Path, options: ReportOptions, load: Callable[[str], Any],
                     truth: Callable[[Any], np.ndarray | None], timings: Mapping[str, float] | None = None) -> Path:
    """Write ``<run>/report.html`` (atomically) and the thumbnails it needs; its path.

    ``load(path) -> PIL.Image`` reads an image of the index; ``truth(index) -> (N,) labels or None`` gives the
    held-out labels of an embeddings index (the evaluation's source of labels)."""
    run_path = Path(run_path)
    t0 = time.perf_counter()
    metrics = read_json(run_path / "metrics.json") if (run_path / "metrics.json").is_file() else {}
    cluster_dirs = sorted(p.parent for p in (run_path / "clusters").glob("*/record.json"))
    nav = " ".join(f'<a href="#clustering-{esc(c.name)}">{esc(c.name)}</a>' for c in cluster_dirs)
    body = [f"<h1>Run {esc(run_path.name)}</h1>",
            f'<nav><a href="#metrics">metrics</a> {nav} <a href="#config">config</a> '
            f'<a href="#times">times</a> <a href="#definitions">definitions</a></nav>',
            '<h2 id="metrics">Metrics</h2>']
    if metrics:
        body.append(metrics_table(metrics))
        body.append('<p class="muted">Scored against held-out labels on the clustered split; each metric links '
                    'to its <a href="#definitions">definition</a>. Baselines: the same clustering of raw pixels (pixels) and of '
                    'each pretrained backbone used as it is (timm_&lt;model&gt;).</p>')
    else:
        body.append('<p class="muted">No metrics.json yet.</p>')
    sections = []
    for cdir in cluster_dirs:
        try:
            sections.append(clustering_section(run_path, cdir, options, load, truth))
        except Exception as e:  # one unreadable clustering must not hide the others
            log.warning("report: clustering %s left out: %s", cdir.name, e)
            sections.append(f"<h2>Clustering {esc(cdir.name)}</h2><p class=\"muted\">not shown: {esc(e)}</p>")
    body += sections
    times = dict(timings or {k[5:-2]: v for k, v in metrics.items()
                             if k.startswith("time_") and k.endswith("_s") and isinstance(v, (int, float))})
    rows = [[esc(k), f'<td class="num">{v:.1f}</td>'] for k, v in times.items()]
    if isinstance(metrics.get("wall_time_s"), (int, float)):
        rows.append(["total (wall time)", f'<td class="num">{metrics["wall_time_s"]:.1f}</td>'])
    body.append('<h2 id="times">Stage times</h2>' + (table(["stage", "seconds"], rows) if rows else
                                                     '<p class="muted">not recorded</p>'))
    body.append('<h2 id="config">Config</h2>')
    stage_cfgs = sorted((run_path / "stage_configs").glob("*.yaml"))
    if (run_path / "config.yaml").is_file():
        body.append(f"<details><summary>config.yaml (click to open)</summary><pre>{esc((run_path / 'config.yaml').read_text())}"
                    "</pre></details>")
    for p in reversed(stage_cfgs):  # single stages run on this run later, newest first
        body.append(f"<details><summary>stage_configs/{esc(p.name)}</summary><pre>{esc(p.read_text())}"
                    "</pre></details>")
    if not stage_cfgs and not (run_path / "config.yaml").is_file():
        body.append('<p class="muted">no config.yaml</p>')
    body.append(definitions_section())
    body.append(f'<p class="muted">Written in {time.perf_counter() - t0:.1f} s.</p>')
    out = run_path / REPORT
    write_text(out, page(f"sslcluster run {run_path.name}", "\n".join(body)))
    return out
