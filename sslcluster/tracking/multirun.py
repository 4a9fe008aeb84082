"""Hydra multiruns (``python train.py -m method=a,b seed=0,1``): every job runs the whole pipeline into its own run
directory under ``run.root``; the multirun folder ``<run.root>/multirun/<stamp>/`` keeps Hydra's
``multirun.yaml`` and, per job, ``<num>/run.json`` pointing at the job's run directory (or saying why it failed).
``sslcluster compare <multirun folder>`` reads those pointers. W&B runs of one multirun share the group
``multirun-<stamp>`` unless ``logger.group`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sslcluster.store.io import read_json, write_json

POINTER = "run.json"
HYDRA_RECORD = "multirun.yaml"


def write_job_pointer(job_dir: Path, sweep_dir: Path, status: str, overrides: list[str], num: int,
                      run_path: Path | None = None, error: str | None = None) -> Path:
    """``<job_dir>/run.json``: the job's overrides, status and run directory (relative to the sweep folder too)."""
    info: dict[str, Any] = {"job": num, "status": status, "overrides": list(overrides)}
    if run_path is not None:
        run_path = Path(run_path).resolve()
        info.update(run_key=run_path.name, run_dir=str(run_path),
                    run_dir_relative=os.path.relpath(run_path, Path(sweep_dir).resolve()))
    if error is not None:
        info["error"] = error
    path = Path(job_dir) / POINTER
    write_json(path, info)
    return path


def is_multirun_folder(folder: Path) -> bool:
    """Whether ``folder`` is a Hydra multirun folder (its record or job pointers)."""
    return (folder / HYDRA_RECORD).is_file() or any(folder.glob(f"*/{POINTER}"))


def read_job_pointers(folder: Path) -> tuple[list[Path], list[str]]:
    """The run directories a multirun folder points at, and a line per job without one (failed, missing, moved)."""
    runs: list[Path] = []
    problems: list[str] = []
    jobs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (not p.name.isdigit(),
                                                                               int(p.name) if p.name.isdigit() else 0,
                                                                               p.name))
    for job in jobs:
        ptr = job / POINTER
        if not ptr.is_file():
            if job.name.isdigit():
                problems.append(f"{job}: job {job.name} has no {POINTER} (it failed or is still running)")
            continue
        try:
            info = read_json(ptr)
        except (OSError, ValueError) as e:
            problems.append(f"{ptr}: unreadable ({e})")
            continue
        if info.get("status") != "complete":
            problems.append(f"{job}: job {info.get('job', job.name)} ({' '.join(info.get('overrides', []))}) "
                            f"failed: {info.get('error', 'no run')}")
            continue
        candidates = [folder / info["run_dir_relative"]] if info.get("run_dir_relative") else []
        candidates += [Path(info["run_dir"])] if info.get("run_dir") else []
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            problems.append(f"{ptr}: its run directory is gone ({info.get('run_dir')})")
            continue
        runs.append(found)
    return runs, problems
