"""Which process of a multi-process launch this is: the one rank helper every package asks."""

from __future__ import annotations

import os

#: environment variable through which processes started by Lightning's DDP launcher find rank 0's run directory.
RUN_KEY_ENV = "SSLCLUSTER_RUN_KEY"


def is_global_rank_zero() -> bool:
    """Whether this process is global rank 0 of its launch; True when alone.

    Read from the environment the launchers set: torchrun's ``RANK``, SLURM's ``SLURM_PROCID`` (with more than one
    task), or the ``NODE_RANK``/``LOCAL_RANK`` that Lightning's launcher gives the processes it starts. Once a
    Lightning strategy has set up the processes, its rank (``rank_zero_only.rank``) is asked as well.
    """
    env = os.environ
    if "RANK" in env:
        env_zero = int(env["RANK"]) == 0
    elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        env_zero = int(env["SLURM_PROCID"]) == 0
    else:
        env_zero = int(env.get("NODE_RANK", "0")) == 0 and int(env.get("LOCAL_RANK", "0")) == 0
    if not env_zero:
        return False
    from pytorch_lightning.utilities import rank_zero_only  # lazy: Lightning is slow to import

    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0
