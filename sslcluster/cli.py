"""The ``sslcluster`` console script: one subcommand per stage, all taking Hydra ``key=value`` overrides on the
same config tree as ``train.py``.

    sslcluster run      [overrides]          the whole pipeline (same as python train.py)
    sslcluster pretrain [overrides]
    sslcluster export   run.key=KEY | checkpoint=PATH [overrides]
    sslcluster cluster  run.key=KEY | embeddings=PATH [clustering=...]
    sslcluster evaluate run.key=KEY [cluster.key=...]
    sslcluster name     run.key=KEY [cluster.key=...] [naming.model=...] [naming.dry_run=true]
    sslcluster runs     [KEY] [run.root=runs]
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
    """Hydra's own launcher for sweeps (``-m method=a,b seed=0,1``): each job runs the whole pipeline."""
    import hydra

    from sslcluster.config import check, config_dir
    from sslcluster.pipeline import run_pipeline

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def job(cfg) -> None:
        check(cfg)
        run_pipeline(cfg)

    sys.argv = ["sslcluster", *argv]
    job()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
        stages = _stages()
        if command not in stages:
            raise SSLClusterError(f"unknown command {command!r}; valid: {', '.join([*stages, 'runs'])}")
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
        return 2
    except KeyboardInterrupt:
        print("sslcluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
