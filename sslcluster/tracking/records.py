"""``sslcluster runs``: list the runs under a root, or show one run's config, metrics and clusterings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import yaml

from sslcluster.errors import SSLClusterError
from sslcluster.tracking.io import read_json
from sslcluster.tracking.rundir import RunDir


def list_runs(root: Path) -> list[dict]:
    rows = []
    if not root.is_dir():
        return rows
    for path in sorted(p for p in root.iterdir() if (p / "config.yaml").is_file()):
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
        m = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
        rows.append({"key": path.name, "method": cfg.get("method", {}).get("name"),
                     "data": cfg.get("data", {}).get("name"), "seed": cfg.get("seed"),
                     "nmi": m.get("nmi"), "acc": m.get("acc"), "knn_top1": m.get("knn_top1"),
                     "clusterings": len(list((path / "clusters").glob("*/record.json")))})
    return rows


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def runs_command(args: Sequence[str]) -> int:
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
        cols = ("key", "method", "data", "seed", "nmi", "acc", "knn_top1", "clusterings")
        widths = [max(len(c), *(len(_f(r[c])) for r in rows)) for c in cols]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for r in rows:
            print("  ".join(_f(r[c]).ljust(w) for c, w in zip(cols, widths)))
        return 0
    for key in keys:
        run = RunDir.open(root, key, lock=False)  # read only
        print(f"# run {key} ({run.path})")
        print(run.config_path.read_text() if run.config_path.exists() else "(no config.yaml)")
        print("# metrics\n" + json.dumps(run.read_metrics(), indent=2))
        for rec in sorted((run.path / "clusters").glob("*/record.json")):
            r = read_json(rec)
            print(f"# clustering {r.get('key')}: {r.get('algorithm')} {r.get('params')} "
                  f"preprocess={r.get('preprocess')} status={r.get('status')}")
    return 0
