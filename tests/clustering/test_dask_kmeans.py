"""k-means on a local 2-worker Dask cluster (dask-ml, k-means||) through the cluster stage: the workers read the
embeddings file in blocks and find the planted clusters; a scheduler address that does not answer, and the
distributed extra missing, fail in one line with nothing written."""

from __future__ import annotations

import builtins
import json
import socket

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from sslcluster.cli import main
from sslcluster.clustering.kmeans import DaskKMeans
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.pipeline import stage_cluster

from clustering.test_clustering_errors import assert_nothing_written, make_run
from clustering.test_streaming import planted

try:
    import dask_ml  # noqa: F401
    import distributed  # noqa: F401
    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False

needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="the distributed extra (dask, distributed, dask-ml) is not "
                                                      "installed: pip install -e '.[distributed]'")


@pytest.fixture
def base(tmp_path):
    return [f"run.root={tmp_path / 'runs'}", "run.key=r", "logger=none", "evaluate.plots.enabled=false",
            "evaluate.linear_probe=false", "clustering=dask_kmeans"]


@needs_dask
def test_local_two_worker_cluster_finds_planted_blobs(tmp_path, base):
    x, y = planted(4000, 16, 5)
    run = make_run(tmp_path / "runs", x, y)
    stage_cluster(compose(base + ["clustering.algorithm.k=5", "clustering.algorithm.chunk_rows=1000",
                                  "clustering.algorithm.local_workers=2"]))
    out = run / "clusters" / "dask_kmeans-test"
    labels = np.load(out / "labels.npy")
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "complete" and record["fit_info"]["n_iter"] >= 1
    assert normalized_mutual_info_score(y, labels) > 0.99


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@needs_dask
def test_an_address_that_does_not_answer_is_one_line(tmp_path, base, capsys):
    x, y = planted(300, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    assert main(["cluster", *base, "clustering.algorithm.k=3", f"clustering.algorithm.address={address}",
                 "clustering.algorithm.connect_timeout=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"clustering.algorithm.address='{address}'" in err and "no Dask" in err
    assert_nothing_written(run, "dask_kmeans-test")


def test_missing_extra_is_one_line(tmp_path, base, monkeypatch):
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("dask_ml", "distributed"):
            raise ImportError(f"No module named {name!r}", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    x, y = planted(300, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(SSLClusterError, match=r"clustering=dask_kmeans needs the distributed extra .* missing: "
                                              r"dask_ml"):
        stage_cluster(compose(base + ["clustering.algorithm.k=3"]))
    assert_nothing_written(run, "dask_kmeans-test")


@needs_dask
def test_pca_with_the_dask_engine_is_refused(tmp_path, base):
    x, y = planted(300, 8, 3)
    run = make_run(tmp_path / "runs", x, y)
    with pytest.raises(SSLClusterError, match="only clustering.preprocess.l2 applies"):
        stage_cluster(compose(base + ["clustering.algorithm.k=3", "clustering.preprocess.pca_dim=4"]))
    assert_nothing_written(run, "dask_kmeans-test")
    assert DaskKMeans().reads_files


@needs_dask
def test_local_cluster_leaves_the_process_environment_as_it_was(monkeypatch):
    """dask's nannies write OMP/MKL/OPENBLAS_NUM_THREADS=1 into the parent's environment: every later subprocess
    (a DDP rank, a resumed training) would then run single-threaded and compute other bits."""
    import os

    from sslcluster.clustering.kmeans import DaskKMeans

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    client, cluster = DaskKMeans(k=2, local_workers=1).client()
    client.close()
    cluster.close()
    assert dict(os.environ) == before
