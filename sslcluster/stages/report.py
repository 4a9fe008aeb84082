"""Stage 5: the run's summary table, learned representation beside the raw-pixel and pretrained baselines, printed and as
``runs/<key>/report.html`` (:func:`write_report`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sslcluster.data.folders import SKIPPED_FILE, read_skipped
from sslcluster.evaluation.registry import HEADLINE, summary_table
from sslcluster.store.representations import display_name
from sslcluster.store.rundir import RunDir

#: how noise (-1) is scored, printed under the table when a clustering has noise (see evaluation.metrics)
NOISE_RULE = ("noise rule: a noise point is never grouped (NMI/AMI/ARI: a cluster of its own) and never matched "
              "(acc/purity: an error); *_clustered metrics score the non-noise points only")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(metrics: dict[str, Any]) -> str:
    """A text table of the headline metrics (:data:`sslcluster.evaluation.registry.HEADLINE`): the learned
    representation's, each baseline's (pixels, then each pretrained one), and learned minus each baseline where
    that difference means something."""
    t = summary_table(metrics, HEADLINE)
    titles = [display_name(p) for p in t.prefixes] + [f"Δ {display_name(b)}" for b in t.baselines]
    widths = [max(10, len(title) + 2) for title in titles]
    header = f"{'metric':<16}" + "".join(f"{title:>{w}}" for title, w in zip(titles, widths))
    lines = [header, "-" * len(header)]
    for metric, values, deltas in t.rows:
        cells = [metric.format(v) for v in values] + [_fmt(d) for d in deltas]
        lines.append(f"{metric.name:<16}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def report(run: RunDir, wall_s: float | None = None, timings: dict[str, float] | None = None) -> str:
    """The run's text summary: metrics table, the noise rule when there is noise, skipped files, clusterings, timings."""
    metrics = run.read_metrics()
    text = [format_table(metrics), ""]
    if any(k.endswith("noise_fraction") and isinstance(v, (int, float)) and v > 0 for k, v in metrics.items()):
        text.append(NOISE_RULE + " (noise_fraction: the table's row)")
    skipped = read_skipped(run.path)
    if skipped:
        counts = {split: sum(row[0] == split for row in skipped) for split in sorted({row[0] for row in skipped})}
        text.append("skipped files: " + ", ".join(f"{n} in {split}" for split, n in counts.items())
                    + f" (reasons in {run.path / SKIPPED_FILE})")
    for clustering in run.clusterings():
        rec = clustering.read_record()
        text.append(f"clusters/{rec.get('key')}: {rec.get('algorithm')} on {rec.get('features')} features, "
                    f"preprocess {'+'.join(rec.get('preprocess') or []) or 'none'}, status {rec.get('status')}")
    text += [f"run key: {run.key}", f"run dir: {run.path}"]
    if wall_s is not None:
        parts = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in (timings or {}).items())
        text.append(f"wall time: {wall_s:.1f} s" + (f" ({parts})" if parts else ""))
    return "\n".join(text)


def write_report(cfg: Any, run: RunDir, timings: dict[str, float] | None = None) -> Path:
    """``runs/<key>/report.html`` (see :mod:`sslcluster.report.run_page`) with the labels and images the
    evaluation uses (``evaluate.labels``, ``data.source.root``)."""
    from sslcluster.report.run_page import ReportOptions, write_run_report
    from sslcluster.data.resolve import load_image
    from sslcluster.store.clusters import labels_from_csv

    rc = cfg.get("report") or {}
    options = ReportOptions(images_per_cluster=int(rc.get("images_per_cluster", 12)),
                            max_clusters=int(rc.get("max_clusters", 100)),
                            thumb_size=int(rc.get("thumb_size", 64)), seed=int(cfg.seed))
    labels_csv = cfg.evaluate.get("labels")

    def truth(index: Any) -> Any:
        return labels_from_csv(labels_csv, index.ids) if labels_csv else index.labels

    fallback = cfg.data.source.get("root") if "source" in cfg.data else None
    chosen = run.clusterings()
    root = chosen[0].data_root(str(fallback) if fallback is not None else None) if chosen else fallback

    def image(path: str) -> Any:  # ``torchvision:`` paths are read under the run's data root
        return load_image(path, torchvision_root=root)

    return write_run_report(run.path, options, image, truth, timings)
