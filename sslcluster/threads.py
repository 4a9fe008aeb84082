"""torch's intra-op thread count kept across calls into numba (UMAP).

Written by hand, because no library guards this: numba's OpenMP threading layer and torch share one GNU OpenMP
runtime (``libgomp.so.1`` is loaded once per process). The first parallel numba function a process runs (UMAP's,
pynndescent's) starts numba's thread pool and sets that runtime's thread count to every core; unguarded, torch would
compute with all of them from then on and ``OMP_NUM_THREADS`` would be lost for the rest of the process: a Hydra
multirun's later jobs would train on every core (beside the other jobs a user gave their own cores) and reduce in
another order than the same job run alone.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on leaving, if torch is loaded and the block changed it (nothing is
    imported: a torch-free process stays torch-free)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if before is not None and torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)
