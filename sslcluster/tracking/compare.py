"""``sslcluster compare``: runs grouped by what varies between them, metrics as mean ± std over the rest (seeds).

Reads run directories only (``config.yaml`` + ``metrics.json``), no W&B. Inputs are run directories, glob patterns,
Hydra multirun folders (``<run.root>/multirun/<stamp>``, through the jobs' ``run.json``), folders of those
(``<run.root>/multirun``) or folders of runs (a run root). The grouping keys are the config keys whose values differ between the runs (``--by`` to choose), leaving out
the seed, ``run.*`` and ``logger.*``, keys that only repeat the seed, and keys that vary exactly like another one
(``method.name`` stands for ``method.module._target_``).

The table and the plot show the headline metrics of :mod:`sslcluster.evaluation.registry` (``--metrics`` to
choose others, ``--metrics all`` for every one), for the learned representation and each baseline present.

Writes into the output folder: ``compare.md`` (the printed table), ``compare.csv`` (every metric: mean, std, n per
group), ``compare_runs.csv`` (one row per run), ``compare.png`` (bar plot, error bars = std) and ``compare.html``
(the table, the plot and a link to each run's report, offline).

Bad input never stops the comparison while something is left to compare: folders that are not runs, runs without
``metrics.json``, failed multirun jobs, and runs missing metrics that the others have are named in warnings.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.registry import HEADLINE, lookup
from sslcluster.store.io import atomic_path, read_json, write_csv, write_text
from sslcluster.store.representations import baseline_prefixes
from sslcluster.store.runconfig import current_layout
from sslcluster.tracking.multirun import is_multirun_folder, read_job_pointers

#: metrics.json entries that are not results.
NOT_METRICS = frozenset({"seed"})
#: config keys never used for grouping: they differ between any two runs or only say where things go.
IGNORED = ("seed", "run", "logger", "checkpoint", "embeddings", "hydra", "stages")


@dataclass
class RunResult:
    """One run directory's flattened config and numeric metrics."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, float]

    @property
    def key(self) -> str:
        """The run's key: the name of its folder."""
        return self.path.name


@dataclass
class Comparison:
    """Groups of runs and their statistics; ``warnings`` name every input that was left out or incomplete."""

    by: list[str]
    metrics: list[str]
    groups: list[tuple[tuple[Any, ...], list[RunResult]]]
    warnings: list[str]

    def stats(self, runs: list[RunResult], metric: str) -> tuple[float, float, int]:
        """Mean, sample std (nan below 2 values) and count of ``metric`` over ``runs`` (finite values only)."""
        vals = [r.metrics[metric] for r in runs if metric in r.metrics and math.isfinite(r.metrics[metric])]
        if not vals:
            return math.nan, math.nan, 0
        arr = np.asarray(vals, dtype=np.float64)
        return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan, len(arr)


# -- reading runs ---------------------------------------------------------------------------------------------

def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples (hashable)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = None
        return out
    key = prefix[:-1]
    out[key] = tuple(d) if isinstance(d, list) else d
    return out


def load_run(path: Path) -> RunResult:
    """A run directory's config and numeric metrics; SSLClusterError when it is not a finished run."""
    cfg_path, m_path = path / "config.yaml", path / "metrics.json"
    if not cfg_path.is_file():
        raise SSLClusterError(f"{path}: not a run directory (no config.yaml)")
    if not m_path.is_file():
        raise SSLClusterError(f"{path}: a run without metrics.json (unfinished or failed), left out")
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        raw = read_json(m_path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise SSLClusterError(f"{path}: unreadable config.yaml or metrics.json ({e}), left out") from None
    if not isinstance(raw, dict) or not isinstance(cfg, dict):
        raise SSLClusterError(f"{path}: config.yaml or metrics.json is not a mapping, left out")
    cfg = current_layout(cfg)  # an older run's cluster.split is compared as clustering.split
    metrics = {k: float(v) for k, v in raw.items()
               if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not metrics:
        raise SSLClusterError(f"{path}: metrics.json has no numeric metrics, left out")
    return RunResult(path, flatten(cfg), metrics)


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def resolve_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Run directories named by ``inputs`` (dirs, globs, multirun folders, run roots), and one line per problem."""
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        paths = [Path(p) for p in sorted(glob.glob(str(Path(item).expanduser())))] if _is_glob(item) \
            else [Path(item).expanduser()]
        if not paths:
            problems.append(f"{item}: the pattern matches nothing")
        for p in paths:
            if not p.exists():
                problems.append(f"{p}: no such file or folder")
            elif (p / "config.yaml").is_file() or (p.is_dir() and (p / "metrics.json").is_file()):
                found.append(p)
            elif p.is_dir() and is_multirun_folder(p):
                runs, probs = read_job_pointers(p)
                found += runs
                problems += probs
            elif p.is_dir() and any((c / "config.yaml").is_file() for c in p.iterdir() if c.is_dir()):
                found += sorted(c for c in p.iterdir() if (c / "config.yaml").is_file())
            elif p.is_dir() and any(is_multirun_folder(c) for c in p.iterdir() if c.is_dir()):
                for sweep in sorted(c for c in p.iterdir() if c.is_dir() and is_multirun_folder(c)):
                    runs, probs = read_job_pointers(sweep)  # e.g. runs/multirun/: every multirun in it
                    found += runs
                    problems += probs
            else:
                problems.append(f"{p}: not a run directory (no config.yaml), a multirun folder or a folder of runs")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), problems


# -- grouping -------------------------------------------------------------------------------------------------

def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


def varying_keys(runs: Sequence[RunResult]) -> list[str]:
    """Config keys that tell the runs apart, one per distinct way of splitting them (see the module doc)."""
    keys = sorted({k for r in runs for k in r.config})
    partitions: dict[tuple[int, ...], list[str]] = {}
    for k in keys:
        if _ignored(k):
            continue
        values = [repr(r.config.get(k)) for r in runs]
        if len(set(values)) < 2:
            continue
        if all(r.config.get(k) == r.config.get("seed") for r in runs):
            continue  # an interpolation of the seed (e.g. clustering.algorithm.seed)
        first: dict[str, int] = {}
        signature = tuple(first.setdefault(v, len(first)) for v in values)
        partitions.setdefault(signature, []).append(k)
    chosen = [min(ks, key=lambda k: (not k.endswith(".name"), len(k), k)) for ks in partitions.values()]
    return sorted(chosen)


def _sort_key(values: tuple[Any, ...]) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, repr(v))
                 for v in values)


def compare_runs(runs: Sequence[RunResult], by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                 warnings: Iterable[str] = ()) -> Comparison:
    """Group ``runs`` by ``by`` (default: :func:`varying_keys`) and pick the metrics to show."""
    if not runs:
        raise SSLClusterError("nothing to compare: no run directories with metrics")
    warns = list(warnings)
    by = list(by) if by else varying_keys(runs)
    for k in by:
        if all(k not in r.config for r in runs):
            raise SSLClusterError(f"--by {k}: no run has this config key")
    present = {m for r in runs for m in r.metrics}
    # the headline metrics (evaluation.registry) of the learned representation, then of each baseline present
    headline = [p + m for p in ["", *baseline_prefixes(present, HEADLINE)] for m in HEADLINE]
    all_metrics = sorted(present, key=lambda m: (m.startswith(("pixels_", "timm_")),
                                                 headline.index(m) if m in headline else 999, m))
    for r in runs:
        missing = [m for m in all_metrics if m not in r.metrics]
        if missing:
            warns.append(f"{r.path}: lacks {', '.join(missing)} (present in other runs); those cells average over "
                         f"the runs that have them")
    if metrics is None:
        shown = [m for m in headline if m in all_metrics] or all_metrics
    elif list(metrics) == ["all"]:
        shown = all_metrics
    else:
        unknown = [m for m in metrics if m not in all_metrics]
        if unknown:
            warns.append(f"--metrics: no run has {', '.join(unknown)}; valid: {', '.join(all_metrics)}")
        shown = [m for m in metrics if m in all_metrics]
        if not shown:
            raise SSLClusterError(f"none of the metrics {', '.join(metrics)} is in the runs")
    groups: dict[tuple[Any, ...], list[RunResult]] = {}
    for r in runs:
        groups.setdefault(tuple(r.config.get(k) for k in by), []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    return Comparison(by, shown, ordered, warns)


# -- output ---------------------------------------------------------------------------------------------------

def _fmt_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return "-" if v is None else str(v)


def fmt_cell(mean: float, std: float, n: int, group_n: int) -> str:
    """``0.5123 ± 0.0100``; a single value alone; ``(n=k)`` when fewer runs than the group's have it."""
    if n == 0:
        return "-"
    if float(mean).is_integer() and (math.isnan(std) or std == 0):  # counts such as n_clusters
        text = f"{int(mean)}" + ("" if math.isnan(std) else " ± 0")
    else:
        text = f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"
    return text + (f" (n={n})" if n < group_n else "")


def to_markdown(comp: Comparison) -> str:
    """The comparison as a Markdown table: one row per group, one column per metric."""
    header = [*(comp.by or ["runs"]), "n", *comp.metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for values, runs in comp.groups:
        cells = [_fmt_value(v) for v in values] if comp.by else ["all"]
        cells.append(str(len(runs)))
        cells += [fmt_cell(*comp.stats(runs, m), len(runs)) for m in comp.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_label(comp: Comparison, values: tuple[Any, ...]) -> str:
    """A group's label, ``key=value`` pairs of its grouping keys (``.name`` dropped), or ``all runs``."""
    return ", ".join(f"{k[:-len('.name')] if k.endswith('.name') else k}={_fmt_value(v)}"
                     for k, v in zip(comp.by, values)) or "all runs"


def write_outputs(comp: Comparison, out: Path) -> dict[str, Path]:
    """compare.md, compare.csv, compare_runs.csv, compare.png and compare.html in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    every = sorted({m for _, runs in comp.groups for r in runs for m in r.metrics})
    paths = {"markdown": out / "compare.md", "csv": out / "compare.csv", "runs_csv": out / "compare_runs.csv",
             "plot": out / "compare.png"}
    write_text(paths["markdown"], to_markdown(comp) + "\n")
    rows = []
    for values, runs in comp.groups:
        row: list[Any] = [*values, len(runs)]
        for m in every:
            mean, std, n = comp.stats(runs, m)
            row += ["" if n == 0 else repr(mean), "" if math.isnan(std) else repr(std), n]
        rows.append(row)
    write_csv(paths["csv"], [*comp.by, "n_runs", *(f"{m}_{s}" for m in every for s in ("mean", "std", "n"))], rows)
    run_rows = [[r.key, str(r.path), *(r.config.get(k) for k in comp.by), r.config.get("seed"),
                 *("" if m not in r.metrics else repr(r.metrics[m]) for m in every)]
                for _, runs in comp.groups for r in runs]
    write_csv(paths["runs_csv"], ["run_key", "run_dir", *comp.by, "seed", *every], run_rows)
    plot_bars(comp, paths["plot"])
    from sslcluster.report.compare_page import write_compare_page

    paths["html"] = write_compare_page(comp, out, paths["plot"], fmt_cell, group_label)
    return paths


def plot_bars(comp: Comparison, path: Path) -> Path:
    """Grouped bars: one cluster of bars per metric, one bar per group, error bars = std over its runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = {m for m in comp.metrics if (d := lookup(m)) is not None and d.fmt == "d"}  # n_clusters: no bar
    metrics = [m for m in comp.metrics if m not in counts] or comp.metrics
    n_groups = len(comp.groups)
    width = 0.8 / max(1, n_groups)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics) + 0.4 * n_groups), 4.5))
    for i, (values, runs) in enumerate(comp.groups):
        stats = [comp.stats(runs, m) for m in metrics]
        means = [s[0] if s[2] else 0.0 for s in stats]
        errs = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
        ax.bar(x + (i - (n_groups - 1) / 2) * width, means, width, yerr=errs, capsize=3,
               label=group_label(comp, values))
    ax.set_xticks(x, metrics, rotation=30, ha="right")
    ax.set_ylabel("mean over runs (± std)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


# -- the command ----------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise SSLClusterError(f"compare: {message} (usage: {self.format_usage().strip()[7:]})")


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def compare_command(args: Sequence[str]) -> int:
    """``sslcluster compare [--out DIR] [--by K1,K2] [--metrics M1,M2|all] RUN_DIR|GLOB|MULTIRUN_FOLDER ...``."""
    parser = _Parser(prog="sslcluster compare", add_help=False,
                     description="Compare runs: mean ± std per group of runs, as Markdown, CSV and a bar plot.")
    parser.add_argument("inputs", nargs="*", metavar="RUN_DIR|GLOB|MULTIRUN_FOLDER",
                        help="run directories, glob patterns, multirun folders or folders of runs")
    parser.add_argument("--out", default=None, help="output folder (default: <multirun>/compare or ./compare)")
    parser.add_argument("--by", default=None, help="config keys to group by, comma separated")
    parser.add_argument("--metrics", default=None, help="metrics to show, comma separated, or 'all'")
    parser.add_argument("-h", "--help", action="store_true")
    ns = parser.parse_args(list(args))
    if ns.help:
        print(parser.format_help())
        return 0
    if not ns.inputs:
        raise SSLClusterError("compare needs run directories, a glob or a multirun folder "
                              "(e.g. sslcluster compare runs/multirun/<stamp>)")
    paths, problems = resolve_inputs(ns.inputs)
    runs: list[RunResult] = []
    for p in paths:
        try:
            runs.append(load_run(p))
        except SSLClusterError as e:
            problems.append(str(e))
    for line in problems:
        print(f"sslcluster: warning: {line}", file=sys.stderr)
    if not runs:
        raise SSLClusterError(f"nothing to compare in {', '.join(ns.inputs)}: "
                              f"{problems[0] if problems else 'no runs found'}")
    from sslcluster.config import rename_old_keys

    by = _split(ns.by)
    comp = compare_runs(runs, by=rename_old_keys(by) if by else None, metrics=_split(ns.metrics))
    for line in comp.warnings:
        print(f"sslcluster: warning: {line}", file=sys.stderr)
    if ns.out:
        out = Path(ns.out).expanduser()
    elif len(ns.inputs) == 1 and Path(ns.inputs[0]).is_dir() and is_multirun_folder(Path(ns.inputs[0])):
        out = Path(ns.inputs[0]) / "compare"
    else:
        out = Path("compare")
    written = write_outputs(comp, out)
    print(f"{len(runs)} runs in {len(comp.groups)} groups, by {', '.join(comp.by) or '(nothing varies)'}\n")
    print(to_markdown(comp))
    print("\nwritten: " + ", ".join(str(p) for p in written.values()))
    return 0
