"""``compare.html``: ``sslcluster compare``'s table (mean ± std per group of runs) and its bar plot, with a link
to each run's own report, in one offline page (see :mod:`sslcluster.report.html`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sslcluster.evaluation.registry import lookup
from sslcluster.report.html import esc, page, table, url
from sslcluster.report.run_page import REPORT, definitions_section
from sslcluster.store.io import write_text


def write_compare_page(comp: Any, out: Path, plot: Path, cell: Any, label: Any) -> Path:
    """``out/compare.html`` for a :class:`sslcluster.tracking.compare.Comparison`; ``cell(mean, std, n, group_n)``
    formats a table cell and ``label(comp, values)`` names a group (the printed table's own functions)."""
    header = [*(comp.by or ["runs"]), "n", *comp.metrics]
    defined = [lookup(h) if i >= len(header) - len(comp.metrics) else None for i, h in enumerate(header)]
    head_html = [esc(h) if m is None else f'<a href="#def-{esc(m.name)}">{esc(h)}</a>'
                 for h, m in zip(header, defined)]
    rows = []
    for values, runs in comp.groups:
        cells = [esc(v) for v in (values if comp.by else ["all"])]
        cells = [f"<td>{c}</td>" for c in cells] + [f'<td class="num">{len(runs)}</td>']
        cells += [f'<td class="num">{esc(cell(*comp.stats(runs, m), len(runs)))}</td>' for m in comp.metrics]
        rows.append(cells)
    run_rows = []
    for values, runs in comp.groups:
        for r in runs:
            rep = Path(r.path) / REPORT
            link = (f'<a href="{url(os.path.relpath(rep, out))}">report</a>' if rep.is_file() else "-")
            run_rows.append([f"<td>{esc(r.key)}</td>", f"<td>{esc(label(comp, values))}</td>",
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
