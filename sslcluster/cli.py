"""The ``sslcluster`` console script: one subcommand per stage, all taking Hydra ``key=value`` overrides on the
same config tree as ``train.py``.

    sslcluster run      [overrides]          the whole pipeline (same as python train.py)
    sslcluster pretrain [overrides]
    sslcluster export   run.key=KEY | checkpoint=PATH [overrides]
    sslcluster cluster  run.key=KEY | embeddings=PATH [clustering=...]
    sslcluster scan     run.key=KEY [scan.epochs=...] [scan.resume=last]   SCAN's recipe with the backbone
    sslcluster evaluate run.key=KEY [clustering.key=...]
    sslcluster name     run.key=KEY [clustering.key=...] [naming.model=...] [naming.dry_run=true]
    sslcluster report   run.key=KEY                   write runs/<key>/report.html again
    sslcluster fiftyone run.key=KEY [--launch]        the run as a FiftyOne dataset (the fiftyone extra)
    sslcluster runs     [KEY] [run.root=runs]
    sslcluster compare  RUN_DIR... | GLOB | MULTIRUN_FOLDER [--out DIR] [--by KEY,...] [--metrics M,...|all]

    sslcluster run -m method=simclr seed=0,1,2    Hydra multirun: one run directory (and W&B run) per job
    sslcluster COMMAND --help                     the command's usage, config groups and main overrides
    sslcluster COMMAND [overrides] --cfg job      print the resolved config and stop
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
        "scan": pipeline.stage_scan,
        "evaluate": pipeline.stage_evaluate,
        "name": pipeline.stage_name,
        "report": pipeline.stage_report,
        "fiftyone": pipeline.stage_fiftyone,
    }


#: per stage command: its usage line and what it does (``sslcluster COMMAND --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("[overrides] [-m sweep overrides]", "The whole pipeline: pretrain -> export -> cluster -> evaluate -> "
            "report, into a new run directory runs/<key>/ (same as python train.py)."),
    "pretrain": ("[overrides]", "Pretrain a backbone self-supervised into a new run directory (checkpoints/)."),
    "export": ("run.key=KEY | checkpoint=PATH [overrides]", "Embed the export.splits with a run's last.ckpt "
               "(or checkpoint=PATH; or, with stages.pretrain=false, a pretrained backbone=timm as it is) into "
               "embeddings/<split>/; an interrupted export resumes."),
    "cluster": ("run.key=KEY | embeddings=PATH [clustering=OPTION] [overrides]", "Cluster a run's embeddings "
                "into clusters/<key>/ (labels are never read)."),
    "scan": ("run.key=KEY | checkpoint=PATH [scan.epochs=N] [scan.resume=last] [overrides]", "SCAN's recipe with "
             "the backbone on a pretrained run: neighbours mined on its train features, backbone + heads trained "
             "on neighbour pairs, self-labelling; into clusters/scan_backbone-<split>/ and "
             "clusters/scan_selflabel-<split>/, evaluated."),
    "evaluate": ("run.key=KEY [clustering.key=KEY] [overrides]", "Score a run's clusterings and representation "
                 "against held-out labels; pictures, metrics.json and report.html."),
    "name": ("run.key=KEY [clustering.key=KEY] [naming.model=...] [naming.dry_run=true]", "Name a clustering's "
             "clusters with a vision LLM into clusters/<key>/names.json."),
    "report": ("run.key=KEY [report.images_per_cluster=N] [overrides]", "Write runs/<key>/report.html from what "
               "the run holds: metrics, pictures, a gallery per cluster, config and stage times."),
    "fiftyone": ("run.key=KEY [fiftyone.dataset=NAME] [--launch | fiftyone.launch=true]", "Load a run into a "
                 "persistent FiftyOne dataset (default: named after the run; a second call updates it): one sample "
                 "per exported image, ground_truth, a field per clustering, the embeddings' 2-D projection per "
                 "representation under its brain key, the metrics in its info; --launch serves the App on it. "
                 'Needs pip install -e ".[fiftyone]".'),
}


def command_help(command: str, prog: str = "sslcluster") -> str:
    """``--help`` of a stage command: usage, what it does, the config groups and the main overrides."""
    from sslcluster.config import config_dir
    from sslcluster.config_help import help_text

    args, what = COMMANDS[command]
    head = f"{prog} {args}" if prog.endswith("train.py") else f"{prog} {command} {args}"
    return help_text(config_dir(), f"usage: {head}\n\n{what}\n\nOverrides are Hydra's KEY=VALUE, GROUP=OPTION, "
                                   "+KEY=VALUE (add a key).")


def _cfg_request(rest: list[str]) -> tuple[list[str], str | None]:
    """``--cfg job`` / ``-c job`` (also ``all``, ``hydra``: the job's config too) taken out of ``rest``."""
    out, which, i = [], None, 0
    while i < len(rest):
        a = rest[i]
        if a in ("--cfg", "-c"):
            if i + 1 >= len(rest):
                raise SSLClusterError(f"{a} needs a value: job")
            which, i = rest[i + 1], i + 2
            continue
        if a.startswith("--cfg="):
            which, i = a.split("=", 1)[1], i + 1
            continue
        out.append(a)
        i += 1
    if which is not None and which not in ("job", "all", "hydra"):
        raise SSLClusterError(f"--cfg {which}: use --cfg job")
    return out, which


def _multirun(argv: Sequence[str]) -> int:
    """Hydra's own launcher for sweeps (``-m method=a,b seed=0,1``): each job runs the whole pipeline into its own
    run directory and leaves ``<sweep dir>/<job>/run.json`` pointing at it; a failing job is reported in one line
    and the others still run. Exit code 2 when any job failed."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from sslcluster.config import check, config_dir, rename_old_keys
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

    sys.argv = ["sslcluster", *rename_old_keys(argv)]
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


def main(argv: Sequence[str] | None = None, prog: str = "sslcluster") -> int:
    """The console script: run ``argv`` (default: the command line); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "runs":
            from sslcluster.report.runs_listing import runs_command

            if any(a in ("-h", "--help") for a in rest):
                print("usage: sslcluster runs [KEY ...] [run.root=DIR]\n\nWithout KEY: one line per run under "
                      "run.root (default runs): method, data, seed, NMI, accuracy, kNN top-1, clusterings.\n"
                      "With KEY: that run's config, metrics and clusterings.")
                return 0

            return runs_command(rest)
        if command == "compare":
            from sslcluster.report.compare_page import compare_command

            return compare_command(rest)
        stages = _stages()
        if command not in stages:
            from sslcluster.config_help import closest

            valid = [*stages, "runs", "compare"]
            hit = closest(command, valid)
            raise SSLClusterError(f"unknown command {command!r}" + (f" -- did you mean {hit}?" if hit else "")
                                  + f"; valid: {', '.join(valid)}")
        if any(a in ("-h", "--help") for a in rest):
            print(command_help(command, prog))
            return 0
        if command == "fiftyone" and "--launch" in rest:
            rest = [a for a in rest if a != "--launch"] + ["fiftyone.launch=true"]
        rest, show_cfg = _cfg_request(rest)
        if show_cfg is not None:
            from sslcluster.config import compose, to_yaml

            print(to_yaml(compose(rest)), end="")
            return 0
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
    except BrokenPipeError:  # output piped into a pager or `head` that quit early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
