"""torch's thread count survives the first parallel numba call of a process (UMAP's): numba's OpenMP layer and torch
share one runtime, and numba's pool start sets it to every core. Each case runs in a fresh process (the pool starts
once per process), with a stand-in for umap.UMAP whose fit runs a parallel numba function."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import numpy as np
import torch  # first, as in the package: numba's OpenMP layer then finds torch's runtime loaded
import numba
import umap

@numba.njit(parallel=True)
def _parallel_sum(x):
    out = 0.0
    for i in numba.prange(x.shape[0]):
        out += x[i]
    return out

class NumbaUMAP:
    def __init__(self, n_components=2, **kwargs):
        self.n = n_components
    def fit_transform(self, x):
        _parallel_sum(np.ones(1000))
        return np.asarray(x)[:, :self.n]

umap.UMAP = NumbaUMAP  # torch's count comes from OMP_NUM_THREADS=1 (an explicit torch.set_num_threads would mask it)
x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
case = sys.argv[1]
if case == "preprocess":
    from sslcluster.clustering.preprocess import PreprocessConfig, preprocess
    preprocess(x, PreprocessConfig(umap_dim=2, umap_neighbors=5))
elif case == "streaming":
    from sslcluster.clustering.preprocess import PreprocessConfig, Preprocessor
    Preprocessor(PreprocessConfig(umap_dim=2, umap_neighbors=5)).fit_transform(x)
elif case == "plots":
    from sslcluster.progress import umap_fit_transform
    umap_fit_transform(x, "test", n_components=2)
print("threads", torch.get_num_threads())
"""


def threads_after(case: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("threads")[-1])


needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: numba's pool cannot widen torch's")


@needs_two_cores
@pytest.mark.parametrize("case", ["preprocess", "streaming", "plots"])
def test_umap_in_the_clustering_preprocess_and_the_plots_keeps_torch_threads(case):
    """Without the guard each case ends with torch on every core (seen: 2 on a 2-core machine)."""
    assert threads_after(case) == 1
