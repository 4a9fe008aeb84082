"""Runs compared: runs grouped by what varies between them, their metrics as mean ± std over the rest (seeds).
The command that prints and writes the comparison (``sslcluster compare``: table, CSV, bar plot, compare.html) is
:mod:`sslcluster.report.compare_page`.

Reads run directories only (``config.yaml`` + ``metrics.json``), no W&B. Inputs are run directories, glob patterns,
Hydra multirun folders (``<run.root>/multirun/<stamp>``, through the jobs' ``run.json``), folders of those
(``<run.root>/multirun``) or folders of runs (a run root). The grouping keys are the config keys whose values differ
between the runs (``--by`` to choose), leaving out the seed, ``run.*`` and ``logger.*``, keys that only repeat the
seed, and keys that vary exactly like another one (``method.name`` stands for ``method.module._target_``).

The metrics shown are the headline metrics of :mod:`sslcluster.evaluation.registry` (``--metrics`` to choose
others, ``--metrics all`` for every one), for the learned representation and each baseline present.

Bad input never stops the comparison while something is left to compare: folders that are not runs, runs without
``metrics.json``, failed multirun jobs, and runs missing metrics that the others have are named in warnings.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from sslcluster.errors import SSLClusterError
from sslcluster.evaluation.registry import HEADLINE
from sslcluster.store.io import read_json
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
