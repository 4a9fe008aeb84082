"""Which process of a multi-process launch this is: the one rank helper every package asks."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta
from typing import Iterator

#: environment variable through which processes started by Lightning's DDP launcher find rank 0's run directory.
RUN_KEY_ENV = "SSLCLUSTER_RUN_KEY"

@contextlib.contextmanager
def run_key_in_env(key: str) -> Iterator[None]:
    """Within the block, ``RUN_KEY_ENV`` names the run ``key``: processes that Lightning's DDP launcher starts
    reuse this run directory. The variable's earlier value (or its absence) comes back afterwards."""
    previous = os.environ.get(RUN_KEY_ENV)
    os.environ[RUN_KEY_ENV] = key
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_KEY_ENV, None)
        else:
            os.environ[RUN_KEY_ENV] = previous


#: when this process imported the module (about when it started): a file another process left before it is older
STARTED = time.time()


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


def local_rank() -> int:
    """This process's rank on its node; 0 when alone.

    Read from ``LOCAL_RANK`` (set by torchrun and by Lightning's launcher for the processes it starts), else SLURM's
    ``SLURM_LOCALID``. A Lightning trainer knows it as well (``trainer.local_rank``, from the same variables).
    """
    env = os.environ
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        if env.get(var, "").strip():
            return int(env[var])
    return 0


def process_group_size() -> int:
    """The number of processes in torch.distributed's default group; 1 when it is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


@contextlib.contextmanager
def untimed_group() -> Iterator[object]:
    """A gloo process group over every rank whose collectives wait as long as it takes (Lightning waits on such a
    group while local rank 0 runs ``prepare_data``): for work on some ranks that may outlast the default group's
    timeout (30 minutes). Every rank must enter it; left, it is destroyed."""
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(days=10000))
    try:
        yield group
    finally:
        dist.destroy_process_group(group)


def any_rank(flag: bool, group: object | None = None) -> bool:
    """Whether ``flag`` is true on any rank of ``group`` (default: the default group); every rank must call it,
    and it returns when all have (a CPU tensor: ``group`` must be a gloo group, or the default group a gloo one)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)  # type: ignore[arg-type]
    return bool(t.item())


def min_over_ranks(value: int, group: object | None = None) -> int:
    """The smallest of ``value`` over the ranks of ``group`` (every rank must call it; CPU tensor, as :func:`any_rank`)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)  # type: ignore[arg-type]
    return int(t.item())
