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
from sslcluster.evaluation.registry import BY_NAME, HEADLINE, METRICS, summary_table
from sslcluster.report.gallery import ClusterCard, cluster_cards
from sslcluster.report.html import esc, page, table, url
from sslcluster.store.io import read_json, write_text

log = logging.getLogger(__name__)

REPORT = "report.html"

@dataclass
class ReportOptions:
    """``report.*`` of the config."""

    images_per_cluster: int = 12  # thumbnails per cluster (the rest counted); enough to judge a cluster at a glance
    max_clusters: int = 100       # galleries shown per clustering (largest first); the rest counted
    thumb_size: int = 64          # pixels, a side; CIFAR-sized images stay sharp
    seed: int = 0


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """The headline metrics present in ``metrics`` (:func:`sslcluster.evaluation.registry.summary_table`):
    learned, each baseline present, and learned minus it where that difference means something."""
    t = summary_table(metrics, HEADLINE)
    rows = []
    for metric, values, deltas in t.rows:
        cells = [f'<td><a href="#def-{esc(metric.name)}" title="{esc(metric.definition)}">{esc(metric.name)}</a></td>']
        cells += [f'<td class="num">{esc(metric.format(v))}</td>' for v in values]
        for d in deltas:
            cls = "" if d is None else "better" if d > 0 else "worse" if d < 0 else ""
            cells.append(f'<td class="num {cls}">{"-" if d is None else f"{d:+.4f}"}</td>')
        rows.append(cells)
    return table(t.header(), rows)


def definitions_section() -> str:
    """HTML section listing every metric's definition (:data:`sslcluster.evaluation.registry.METRICS`), each
    with an anchor ``def-<name>``."""
    items = "".join(f'<dt id="def-{esc(m.name)}">{esc(m.name)}</dt><dd>{esc(m.definition)}</dd>' for m in METRICS)
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
        shown = [BY_NAME[k] for k in HEADLINE if k in m]
        out.append(table([x.name for x in shown], [[f'<td class="num">{esc(x.format(m[x.name]))}</td>'
                                                    for x in shown]]))
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
