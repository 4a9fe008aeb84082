"""``sslcluster runs``: list the runs under a root, or show one run's config, metrics and clusterings (the rows
are read by :mod:`sslcluster.tracking.records`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from sslcluster.errors import SSLClusterError
from sslcluster.store.rundir import RunDir
from sslcluster.tracking.records import CLUSTERING_METRICS, RUN_METRICS, list_clusterings, list_runs


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _table(rows: list[dict], cols: Sequence[str]) -> str:
    widths = [max(len(c), *(len(_f(r[c])) for r in rows)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(_f(r[c]).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


def runs_command(args: Sequence[str]) -> int:
    """``sslcluster runs [KEY...] [run.root=DIR]``: the runs of a root, or one run in detail."""
    root = Path("runs")
    keys = []
    for a in args:
        if a.startswith("run.root="):
            root = Path(a.split("=", 1)[1])
        elif "=" in a:
            raise SSLClusterError(f"runs takes KEY and run.root=DIR, not {a!r}")
        else:
            keys.append(a)
    if not keys:
        rows = list_runs(root)
        if not rows:
            print(f"no runs in {root}")
            return 0
        print(_table(rows, ("key", "method", "data", "seed", *RUN_METRICS, "clusterings")))
        return 0
    for key in keys:
        run = RunDir.open(root, key, lock=False)  # read only
        print(f"# run {key} ({run.path})")
        print(run.config_path.read_text() if run.config_path.exists() else "(no config.yaml)")
        print("# metrics\n" + json.dumps(run.read_metrics(), indent=2))
        rows = list_clusterings(run.path)
        if rows:
            print("# clusterings\n" + _table(rows, ("cluster_key", "algorithm", "k", "select_k", "preprocess",
                                                     *CLUSTERING_METRICS, "fit_s", "status")))
        for clustering in run.clusterings():
            r = clustering.read_record()
            sel = r.get("select_k")
            print(f"# clustering {r.get('key')}: {r.get('algorithm')} {r.get('params')} "
                  f"preprocess={r.get('preprocess')} backend={r.get('backend')} times_s={r.get('times_s')} "
                  f"status={r.get('status')}"
                  + (f" select_k={sel['method']} k={sel['chosen_k']} over {sel['ks'][0]}..{sel['ks'][-1]}"
                     if sel else ""))
    return 0
