"""Issue 29's tables from finished runs (benchmarks/scan_digits_seeds.sh, benchmarks/cifar_scan_cpu.sh): the SCAN
stage's validation curve (``val_nmi`` etc. per scored epoch of step 2, on the validation part of train: where
``scan.epochs`` is chosen) and the test figures (NMI / ARI / ACC, mean +- std over the runs) of every clustering.

    python benchmarks/scan_digits_table.py /tmp/digits_runs/digits_s*_scan200
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

KEYS = ("kmeans-test", "kmeans-fit-train", "scan-fit-train", "temi-fit-train", "scan_backbone-test",
        "scan_selflabel-test")


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--candidates", type=int, nargs="*", default=[50, 100, 150, 200],
                   help="the scan.epochs candidates (a coarse grid: 144 validation images make finer steps noise)")
    args = p.parse_args()
    runs = sorted(args.runs)
    # validation curve of step 2
    curves: dict[int, dict[str, list[float]]] = {}
    for run in runs:
        path = run / "clusters" / "scan_backbone-test" / "curve.csv"
        if not path.is_file():
            continue
        for row in csv.DictReader(path.open()):
            if row.get("val_nmi"):
                cell = curves.setdefault(int(row["epoch"]), {"val_nmi": [], "val_ari": [], "val_acc": []})
                for k in cell:
                    cell[k].append(float(row[k]))
    if curves:
        print(f"SCAN step 2 on the validation part of train ({len(runs)} runs)\n")
        print("| epoch | runs | val_nmi | val_ari | val_acc |\n|---|---|---|---|---|")
        for epoch in sorted(curves):
            c = curves[epoch]
            print(f"| {epoch} | {len(c['val_nmi'])} | {mean_std(c['val_nmi'])} | {mean_std(c['val_ari'])} | "
                  f"{mean_std(c['val_acc'])} |")
        scored = [e for e in args.candidates if e in curves] or sorted(curves)
        best = max(scored, key=lambda e: (float(np.mean(curves[e]["val_nmi"])), -e))
        print(f"\nchosen scan.epochs (highest mean val_nmi among {scored}): {best}\n")
    # test figures
    print("| clustering | runs | NMI | ARI | ACC | per run NMI / ARI / ACC |\n|---|---|---|---|---|---|")
    for key in KEYS:
        rows = []
        for run in runs:
            path = run / "clusters" / key / "metrics.json"
            if path.is_file():
                m = json.loads(path.read_text())
                rows.append((m["nmi"], m["ari"], m["acc"]))
        if rows:
            per = "; ".join(" / ".join(f"{v:.3f}" for v in r) for r in rows)
            print(f"| `{key}` | {len(rows)} | {mean_std([r[0] for r in rows])} | {mean_std([r[1] for r in rows])} | "
                  f"{mean_std([r[2] for r in rows])} | {per} |")


if __name__ == "__main__":
    main()
