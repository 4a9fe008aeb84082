"""The runs under a root and the clusterings of a run, read from their folders as rows (key, method, data, seed,
headline metrics; algorithm, k, preprocessing, fit time, status). ``sslcluster runs`` prints them:
:mod:`sslcluster.report.runs_listing`."""

from __future__ import annotations

from pathlib import Path

import yaml

from sslcluster.evaluation.registry import BY_NAME, HEADLINE
from sslcluster.store.io import read_json
from sslcluster.store.clusters import clusterings


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
