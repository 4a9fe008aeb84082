"""The ``sslcluster`` console script: one subcommand per stage, all taking Hydra ``key=value`` overrides on the
same config tree as ``train.py``.

    sslcluster run      [overrides]          the whole pipeline (same as python train.py)
    sslcluster pretrain [overrides]
    sslcluster export   run.key=KEY | checkpoint=PATH [overrides]
    sslcluster cluster  run.key=KEY | embeddings=PATH [clustering=...]
    sslcluster evaluate run.key=KEY [cluster.key=...]
    sslcluster name     run.key=KEY [cluster.key=...] [naming.model=...] [naming.dry_run=true]
    sslcluster runs     [KEY] [run.root=runs]
    sslcluster compare  RUN_DIR... | GLOB | MULTIRUN_FOLDER [--out DIR] [--by KEY,...] [--metrics M,...|all]

    sslcluster run -m method=simclr seed=0,1,2    Hydra multirun: one run directory (and W&B run) per job
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from sslcluster.errors import SSLClusterError

USAGE = __doc__


def _stages() -> dict[str, Callable]:
    from sslcluster import pipeline

    return {
        "run": pipeline.run_pipeline,
        "pretrain": pipeline.stage_pretrain,
        "export": pipeline.stage_export,
        "cluster": pipeline.stage_cluster,
        "evaluate": pipeline.stage_evaluate,
        "name": pipeline.stage_name,
    }


def _multirun(argv: Sequence[str]) -> int:
    """Hydra's own launcher for sweeps (``-m method=a,b seed=0,1``): each job runs the whole pipeline into its own
    run directory and leaves ``<sweep dir>/<job>/run.json`` pointing at it; a failing job is reported in one line
    and the others still run. Exit code 2 when any job failed."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from sslcluster.config import check, config_dir
    from sslcluster.pipeline import run_pipeline
    from sslcluster.tracking.multirun import write_job_pointer

    jobs: list[str] = []
    failed: list[str] = []
    sweep: list[Path] = []

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def job(cfg) -> None:
        hc = HydraConfig.get()
        job_dir, sweep_dir = Path(hc.runtime.output_dir), Path(hc.sweep.dir)
        overrides = list(hc.overrides.task)
        sweep[:] = [sweep_dir]
        jobs.append(" ".join(overrides))
        try:
            check(cfg)
            run = run_pipeline(cfg)
        except SSLClusterError as e:
            failed.append(f"#{hc.job.num} ({' '.join(overrides)}): {e}")
            print(f"sslcluster: error: job #{hc.job.num}: {e}", file=sys.stderr)
            write_job_pointer(job_dir, sweep_dir, "failed", overrides, hc.job.num, error=str(e))
            return
        write_job_pointer(job_dir, sweep_dir, "complete", overrides, hc.job.num, run_path=run.path)

    sys.argv = ["sslcluster", *argv]
    try:
        job()
    except SystemExit as e:  # hydra reports a bad override itself and exits
        if e.code not in (0, None):
            return 2
    where = sweep[0] if sweep else "(none)"
    print(f"multirun: {len(jobs)} jobs, {len(failed)} failed; folder {where}\n"
          f"compare them with: sslcluster compare {where}")
    for line in failed:
        print(f"sslcluster: error: failed job {line}", file=sys.stderr)
    return 2 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run ``argv`` (default: the command line); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "runs":
            from sslcluster.tracking.records import runs_command

            return runs_command(rest)
        if command == "compare":
            from sslcluster.tracking.compare import compare_command

            return compare_command(rest)
        stages = _stages()
        if command not in stages:
            raise SSLClusterError(f"unknown command {command!r}; valid: {', '.join([*stages, 'runs', 'compare'])}")
        if "-m" in rest or "--multirun" in rest:
            if command != "run":
                raise SSLClusterError("multirun (-m) is for the whole pipeline: sslcluster run -m ... or train.py -m")
            return _multirun(rest)
        from sslcluster.config import compose

        cfg = compose(rest)
        stages[command](cfg)
        return 0
    except SSLClusterError as e:
        print(f"sslcluster: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("sslcluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
