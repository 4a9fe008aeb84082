"""Hydra multirun through train.py in a subprocess: one run directory and one W&B run (in one group) per job, a
pointer per job in the multirun folder, and ``compare`` on that folder with the right means."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from sslcluster.cli import main
from wandb_reader import offline_runs, read_offline_run

REPO = Path(__file__).resolve().parents[2]


def train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=400)


def test_two_by_two_multirun_then_compare(tiny, tmp_path, capsys):
    overrides = [o for o in tiny if not o.startswith("logger=")]
    proc = train(["-m", "seed=0,1", "clustering.algorithm.k=5,10", "logger=wandb", "stages.baseline=false",
                  *overrides], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "runs"
    runs = sorted(p for p in root.iterdir() if (p / "config.yaml").is_file())
    assert len(runs) == 4
    combos = set()
    metrics = {}
    for r in runs:
        cfg = yaml.safe_load((r / "config.yaml").read_text())
        combos.add((cfg["seed"], cfg["clustering"]["algorithm"]["k"]))
        metrics[r.name] = (cfg["clustering"]["algorithm"]["k"], json.loads((r / "metrics.json").read_text()))
    assert combos == {(0, 5), (0, 10), (1, 5), (1, 10)}
    sweeps = list((root / "multirun").iterdir())
    assert len(sweeps) == 1
    sweep = sweeps[0]
    pointers = [json.loads((sweep / str(i) / "run.json").read_text()) for i in range(4)]
    assert sorted(p["run_key"] for p in pointers) == [r.name for r in runs]
    assert f"sslcluster compare {sweep}" in proc.stdout
    # one W&B run per job, all in the multirun's group
    groups = set()
    for r in runs:
        (folder,) = offline_runs(r)
        info = read_offline_run(folder, wait_s=60)
        groups.add(info["group"])
        assert info["name"] == r.name and info["summary"]["nmi"] == metrics[r.name][1]["nmi"]
    assert groups == {f"multirun-{sweep.name}"}

    assert main(["compare", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "4 runs in 2 groups, by clustering.algorithm.k" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("| clustering.algorithm.k"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    for k in (5, 10):
        row = next(ln for ln in out.splitlines() if ln.startswith(f"| {k} |"))
        cells = dict(zip(cols, (c.strip() for c in row.strip("|").split("|"))))
        assert cells["n"] == "2"
        for metric in ("nmi", "ari", "acc", "knn_top1"):
            vals = np.array([m[metric] for kk, m in metrics.values() if kk == k])
            assert cells[metric] == f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}", (k, metric)
    assert (sweep / "compare" / "compare.csv").is_file() and (sweep / "compare" / "compare.png").is_file()


def test_a_failing_job_is_one_line_and_the_others_run(tiny, tmp_path, capsys):
    proc = train(["-m", "data.batch_size=64,5000", "stages.baseline=false", "stages.evaluate=false",
                  *[o for o in tiny if not o.startswith("data.batch_size=")]], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "job #1" in proc.stderr and "data.batch_size=5000" in proc.stderr
    assert "Traceback" not in proc.stderr
    root = tmp_path / "runs"
    assert len([p for p in root.iterdir() if (p / "config.yaml").is_file()]) == 1  # the failed one left nothing
    (sweep,) = (root / "multirun").iterdir()
    assert json.loads((sweep / "1" / "run.json").read_text())["status"] == "failed"
    main(["compare", str(sweep)])
    assert "job 1 (data.batch_size=5000" in capsys.readouterr().err
