"""``sslcluster compare``: the comparison of runs (:mod:`sslcluster.tracking.compare` reads and groups them) as a
printed table and files in the output folder: ``compare.md`` (the printed table), ``compare.csv`` (every metric:
mean, std, n per group), ``compare_runs.csv`` (one row per run), ``compare.png`` (bar plot, error bars = std) and
``compare.html`` (the table, the plot and a link to each run's own report, in one offline page; see
:mod:`sslcluster.report.html`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.registry import lookup
from sslcluster.report.html import esc, page, table, url
from sslcluster.report.run_page import REPORT, definitions_section
from sslcluster.store.io import atomic_path, write_csv, write_text
from sslcluster.tracking.compare import Comparison, RunResult, compare_runs, load_run, resolve_inputs
from sslcluster.tracking.multirun import is_multirun_folder

# -- the table ------------------------------------------------------------------------------------------------

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


# -- the files ------------------------------------------------------------------------------------------------

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
    paths["html"] = write_compare_page(comp, out, paths["plot"])
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


def write_compare_page(comp: Comparison, out: Path, plot: Path) -> Path:
    """``out/compare.html``: the comparison's table (cells as :func:`fmt_cell` writes them), the bar plot ``plot``,
    the runs with their groups (:func:`group_label`) and links to their reports, and the metrics' definitions."""
    header = [*(comp.by or ["runs"]), "n", *comp.metrics]
    defined = [lookup(h) if i >= len(header) - len(comp.metrics) else None for i, h in enumerate(header)]
    head_html = [esc(h) if m is None else f'<a href="#def-{esc(m.name)}">{esc(h)}</a>'
                 for h, m in zip(header, defined)]
    rows = []
    for values, runs in comp.groups:
        cells = [esc(v) for v in (values if comp.by else ["all"])]
        cells = [f"<td>{c}</td>" for c in cells] + [f'<td class="num">{len(runs)}</td>']
        cells += [f'<td class="num">{esc(fmt_cell(*comp.stats(runs, m), len(runs)))}</td>' for m in comp.metrics]
        rows.append(cells)
    run_rows = []
    for values, runs in comp.groups:
        for r in runs:
            rep = Path(r.path) / REPORT
            link = (f'<a href="{url(os.path.relpath(rep, out))}">report</a>' if rep.is_file() else "-")
            run_rows.append([f"<td>{esc(r.key)}</td>", f"<td>{esc(group_label(comp, values))}</td>",
                             f"<td>{esc(r.config.get('seed'))}</td>", f"<td>{link}</td>"])
    body = ["<h1>Comparison of runs</h1>",
            f'<p class="muted">{sum(len(r) for _, r in comp.groups)} runs in {len(comp.groups)} groups, by '
            f"{esc(', '.join(comp.by) or '(nothing varies)')}; mean ± sample std over each group's runs.</p>",
            table(head_html, rows, raw_header=True),
            f'<img class="plot" src="{url(os.path.relpath(plot, out))}" alt="bar plot of the metrics">']
    if comp.warnings:
        body.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in comp.warnings) + "</ul>")
    body.append("<h2>Runs</h2>" + table(["run", "group", "seed", "report"], run_rows))
    body.append(definitions_section())
    path = out / "compare.html"
    write_text(path, page("sslcluster compare", "\n".join(body)))
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
