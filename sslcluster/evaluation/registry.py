"""Every figure a run's ``metrics.json`` holds, defined once: what it is, whether it is a headline figure, whether
a difference against a baseline means something, how it is printed.

The console table (:mod:`sslcluster.stages.report`), ``report.html`` (:mod:`sslcluster.report.run_page`),
``sslcluster compare``, ``sslcluster runs`` and the W&B summary table all read this list: a metric added here (and
computed in :mod:`sslcluster.evaluation.metrics`, :mod:`sslcluster.evaluation.probes` or the evaluate stage) shows
up in each of them. A representation's figures carry its prefix in ``metrics.json`` (``pixels_nmi``,
``timm_<model>_nmi``: :mod:`sslcluster.store.representations`); :func:`lookup` strips it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sslcluster.store.representations import baseline_prefixes, display_name


@dataclass(frozen=True)
class Metric:
    """One figure of ``metrics.json``."""

    name: str
    #: what it is and how it is computed (report.html's "Metric definitions")
    definition: str
    #: a row of the summary tables (console, report.html, compare's default columns, W&B's table)
    headline: bool = False
    #: learned minus a baseline means something: the same quantity of the same points and labels. Not for counts,
    #: nor for label-free quality measured in each representation's own space
    delta: bool = False
    #: what it describes: "clustering" (also in ``clusters/<key>/metrics.json``), "representation" (kNN, probe)
    #: or "run" (times, seed)
    scope: str = "clustering"
    #: format spec of a number ("d": a count); "s": text
    fmt: str = ".4f"

    def format(self, value: Any) -> str:
        """A cell's text: ``-`` for missing, ``nan``, else the value by :attr:`fmt`."""
        if value is None:
            return "-"
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if self.fmt == "d" and isinstance(value, (int, float)) and float(value).is_integer():
            return str(int(value))
        if self.fmt in ("d", "s") or isinstance(value, (str, bool)):
            return str(value)
        return format(value, self.fmt)


_NOISE = "Noise points (-1) are never grouped and never matched (see evaluation.metrics)."

METRICS: tuple[Metric, ...] = (
    # -- the headline rows, in the tables' order ----------------------------------------------------------------
    Metric("nmi", "Normalised mutual information between clusters and held-out classes (scikit-learn, arithmetic "
                  "normalisation): 0 for independent partitions, 1 for identical ones. Each noise point counts as a "
                  "cluster of its own.", headline=True, delta=True),
    Metric("ami", "Adjusted mutual information: NMI corrected for chance (0 expected for a random partition); "
                  "noise as for NMI.", headline=True, delta=True),
    Metric("ari", "Adjusted Rand index: agreement of pairs of points (same / different cluster vs class), corrected "
                  "for chance; 0 random, 1 identical; noise as for NMI.", headline=True, delta=True),
    Metric("acc", "Clustering accuracy: fraction of points whose cluster maps to their class under the one-to-one "
                  "Hungarian assignment (as in SCAN); points of unmatched clusters (more clusters than classes) and "
                  "noise points count as errors.", headline=True, delta=True),
    Metric("purity", "Each cluster takes its majority class (many-to-one); fraction of points in their cluster's "
                     "majority class; noise points count as errors. Rises with the number of clusters.",
           headline=True, delta=True),
    Metric("silhouette", "Mean silhouette coefficient (-1..1) of the non-noise points in the declared quality space "
                         "(L2-normalised embeddings before PCA/UMAP); no labels used. Measured in each "
                         "representation's own space: no delta.", headline=True),
    Metric("knn_top1", "Top-1 accuracy of a weighted kNN classifier (k=200, T=0.1, cosine on L2-normalised "
                       "backbone features, as lightly's benchmarks) with the train split as memory bank, scored on "
                       "the test split.", headline=True, delta=True, scope="representation"),
    Metric("linear_top1", "Top-1 accuracy on the test split of a logistic-regression probe fitted on the train "
                          "split's frozen, standardised features (weight decay chosen on a part of the train split).",
           headline=True, delta=True, scope="representation"),
    Metric("n_clusters", "Number of clusters found (noise excluded).", headline=True, fmt="d"),
    Metric("noise_fraction", "Fraction of points labelled noise (-1) by the clustering (density-based algorithms).",
           headline=True),
    # -- the rest of a clustering's figures -----------------------------------------------------------------------
    *(Metric(f"{m}_clustered", f"{m} over the clustered (non-noise) labelled points only; present when there is "
                               f"noise. {_NOISE}") for m in ("nmi", "ami", "ari", "acc", "purity")),
    Metric("noise_fraction_labeled", "Fraction of the labelled points that are noise."),
    Metric("n_points", "Points clustered.", fmt="d"),
    Metric("n_labeled", "Points with a held-out label (the external metrics' denominator).", fmt="d"),
    Metric("nmi_normalization", "NMI's normalisation (scikit-learn's average_method).", fmt="s"),
    Metric("chosen_k", "The number of clusters k selection chose (clustering.select_k).", fmt="d"),
    Metric("intra_var", "Intra-cluster variance: mean squared distance of a non-noise point to its cluster's "
                        "centroid, in the declared quality space."),
    Metric("inter_var", "Inter-cluster variance: size-weighted mean squared distance of the centroids to the mean "
                        "of the non-noise points, in the declared quality space."),
    Metric("internal_n", "Points the label-free metrics were computed on (a fixed subsample above 10,000).", fmt="d"),
    Metric("davies_bouldin", "Davies-Bouldin index in the declared quality space (lower: better separated)."),
    Metric("calinski_harabasz", "Calinski-Harabasz index in the declared quality space (inter / intra variance, "
                                "corrected for k).", fmt=".2f"),
    # -- tuning figures (a validation part of the train split, never the test split) -----------------------------
    *(Metric(f"val_{m}", f"{m} of the run's clustering fitted on a seeded validation part of the train split "
                         "(evaluate.validation.fraction): for choosing settings.", scope="run")
      for m in ("nmi", "ari", "acc")),
    Metric("val_knn_top1", "kNN top-1 of the validation part against the rest of the train split.", scope="run"),
    Metric("val_n", "Rows in the validation part.", scope="run", fmt="d"),
    # -- the run --------------------------------------------------------------------------------------------------
    Metric("time_<stage>_s", "Wall time of a stage, seconds (pretrain, export, cluster, naming, evaluate, baseline, "
                             "report).", scope="run", fmt=".1f"),
    Metric("wall_time_s", "Wall time of the whole run, seconds.", scope="run", fmt=".1f"),
    Metric("train_steps", "Optimiser steps pretraining took.", scope="run", fmt="d"),
    Metric("train_epochs", "Epochs pretraining reached (optimiser steps over steps per epoch).", scope="run",
           fmt=".2f"),
    Metric("train_planned_steps", "Optimiser steps the learning-rate schedule spans (max_epochs, max_steps, or "
                                  "a time budget's measured rate).", scope="run", fmt="d"),
    Metric("train_fit_s", "Seconds of this session's training loop (first batch to the end of training).",
           scope="run", fmt=".1f"),
    Metric("train_images_per_s", "Training images per second over this session's optimiser steps.", scope="run",
           fmt=".1f"),
    Metric("train_time_budget_s", "The time budget of pretraining (trainer.max_time), seconds.", scope="run",
           fmt=".0f"),
    Metric("seed", "The run's seed.", scope="run", fmt="d"),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
#: the summary tables' rows, in order
HEADLINE: tuple[str, ...] = tuple(m.name for m in METRICS if m.headline)
_STAGE_TIME = re.compile(r"time_\w+_s")


def lookup(key: str) -> Metric | None:
    """The metric a ``metrics.json`` key is (``pixels_nmi``, ``pixels_umap_nmi`` and ``timm_<model>_nmi`` are ``nmi``; ``time_export_s``
    is ``time_<stage>_s``); None when the key is none of them."""
    if key in BY_NAME:
        return BY_NAME[key]
    if _STAGE_TIME.fullmatch(key):
        return BY_NAME["time_<stage>_s"]
    for prefix in ("pixels_umap_", "pixels_", "scan_backbone_", "scan_selflabel_"):
        if key.startswith(prefix):
            m = BY_NAME.get(key[len(prefix):])
            return m if m is not None and m.scope != "run" else None
    if key.startswith("timm_"):  # timm_<model>_nmi, the model's name may hold "_": the longest metric that fits
        fits = [m for m in METRICS if m.scope != "run" and key.endswith("_" + m.name)
                and len(key) > len("timm_") + len(m.name) + 1]
        return max(fits, key=lambda m: len(m.name)) if fits else None
    return None


@dataclass
class SummaryTable:
    """The headline metrics of a run: one row per metric present, a column per representation, then one delta
    column (learned minus it) per baseline. The console, report.html and W&B print it."""

    #: representation prefixes of the value columns: "" (learned), "pixels_", "timm_<model>_"
    prefixes: list[str]
    #: (metric, values per prefix, deltas per baseline: None where there is no meaningful delta)
    rows: list[tuple[Metric, list[Any], list[float | None]]]

    @property
    def baselines(self) -> list[str]:
        """The baseline prefixes (every column but the learned one)."""
        return self.prefixes[1:]

    def header(self) -> list[str]:
        """Column titles: metric, learned, each baseline, ``learned − <baseline>`` per baseline."""
        return (["metric", *(display_name(p) for p in self.prefixes)]
                + [f"learned − {display_name(b)}" for b in self.baselines])


def summary_table(metrics: Mapping[str, Any], names: Iterable[str] = HEADLINE) -> SummaryTable:
    """The :class:`SummaryTable` of a ``metrics.json`` mapping: rows of ``names`` (the headline metrics) that any
    representation has."""
    names = list(names)
    prefixes = ["", *baseline_prefixes(metrics, names)]
    rows = []
    for name in names:
        if not any(p + name in metrics for p in prefixes):
            continue
        metric = BY_NAME[name]
        values = [metrics.get(p + name) for p in prefixes]
        deltas: list[float | None] = []
        for v in values[1:]:
            a = values[0]
            ok = metric.delta and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                      for x in (a, v))
            deltas.append(float(a) - float(v) if ok else None)  # type: ignore[arg-type]
        rows.append((metric, values, deltas))
    return SummaryTable(prefixes, rows)
