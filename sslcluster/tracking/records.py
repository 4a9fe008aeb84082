"""``sslcluster runs``: list the runs under a root, or show one run's config, metrics and clusterings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import yaml

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.registry import BY_NAME, HEADLINE
from sslcluster.store.io import read_json
from sslcluster.store.clusters import clusterings
from sslcluster.store.rundir import RunDir


def _is_run(path: Path) -> bool:
    """A run folder: a config, or the embeddings / clusterings a stage wrote into it."""
    return path.is_dir() and not path.name.startswith(".") and any(
        (path / name).exists() for name in ("config.yaml", "embeddings", "clusters"))


#: ``sslcluster runs``' metric columns: the headline metrics that compare representations (evaluation.registry)
RUN_METRICS = tuple(m for m in HEADLINE if BY_NAME[m].delta)
#: ``sslcluster runs KEY``' metric columns per clustering: the headline metrics of a clustering
CLUSTERING_METRICS = tuple(m for m in HEADLINE if BY_NAME[m].scope == "clustering")


def list_runs(root: Path) -> list[dict]:
    """One row per run folder under ``root``: key, method, data, seed, :data:`RUN_METRICS`, clusterings."""
    rows: list[dict] = []
    if not root.is_dir():
        return rows
    for path in sorted(p for p in root.iterdir() if _is_run(p)):
        cfg = (yaml.safe_load((path / "config.yaml").read_text()) or {}) if (path / "config.yaml").is_file() else {}
        m = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
        rows.append({"key": path.name, "method": cfg.get("method", {}).get("name"),
                     "data": cfg.get("data", {}).get("name"), "seed": cfg.get("seed"),
                     **{k: m.get(k) for k in RUN_METRICS}, "clusterings": len(clusterings(path))})
    return rows


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def list_clusterings(run_path: Path) -> list[dict]:
    """One row per ``clusters/<key>/``: record fields (algorithm, k, chosen k, preprocessing, fit time, status)
    and :data:`CLUSTERING_METRICS` from its ``metrics.json`` when evaluated, else its label-free quality."""
    rows = []
    for clustering in clusterings(run_path):
        r = clustering.read_record()
        m = read_json(clustering.metrics_path) if clustering.metrics_path.exists() else {}
        q = r.get("quality") or {}
        params = r.get("params") or {}
        rows.append({"cluster_key": r.get("key", clustering.key), "algorithm": r.get("algorithm"),
                     "k": params.get("k"), "select_k": (r.get("select_k") or {}).get("method"),
                     "preprocess": "+".join(r.get("preprocess") or []) or None,
                     **{k: m.get(k, q.get(k)) for k in CLUSTERING_METRICS},
                     "fit_s": (r.get("times_s") or {}).get("fit"), "status": r.get("status")})
    return rows


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
