"""A tiny configuration of each benchmark script runs and reports figures that a wrong implementation would not:
the planted blobs are recovered (NMI far above the ~0.01 of labels unrelated to the blobs), and the reported fit
times fit inside the wall time of the whole call (a unit or bookkeeping error would not)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kmeans_benchmark_quick(capsys):
    t0 = time.perf_counter()
    rows = load("kmeans_scale").main(["--quick", "--backends", "faiss:1,sklearn", "--iters", "5"])
    wall = time.perf_counter() - t0
    assert {r["backend"] for r in rows} == {"faiss/1t", "sklearn"}
    assert len(rows) == 4
    for r in rows:
        assert r["nmi"] > 0.5, r  # planted blobs: measured 0.74-0.96 after 5 iterations
        assert 1 <= r["iters_run"] <= 5
    assert 0 < sum(r["fit_s"] for r in rows) < wall
    out = capsys.readouterr().out
    assert "load average" in out and out.count("NMI") == 4


def test_kmeans_benchmark_extrapolation_is_marked(capsys):
    rows = load("kmeans_scale").main(["--cases", "1000000:4:3", "--backends", "sklearn", "--iters", "4",
                                      "--sklearn-iters", "2"])
    assert rows[0]["iters_asked"] == 2 and rows[0]["extrapolated_fit_s"] == pytest.approx(rows[0]["fit_s"] * 2)
    assert "EXTRAPOLATED" in capsys.readouterr().out


def test_hdbscan_benchmark_quick():
    t0 = time.perf_counter()
    row = load("hdbscan_scale").main(["--quick", "--umap-dim", "0"])
    wall = time.perf_counter() - t0
    assert row["n"] == 2000 and 0 < row["hdbscan_s"] < wall
    assert row["noise_fraction"] < 0.8 and 3 <= row["n_clusters"] <= 7  # 5 blobs planted (measured: 4, noise 0.47)
    assert row["nmi"] > 0.3 and row["nmi_non_noise"] > 0.7  # measured 0.48 (noise counts), 0.90 clustered only


def test_som_benchmark_quick():
    t0 = time.perf_counter()
    rows = load("som_scale").main(["--quick"])
    wall = time.perf_counter() - t0
    assert [r["mode"] for r in rows] == ["kmeans", "node"]
    assert 0 < sum(r["fit_s"] for r in rows) < wall
    assert rows[0]["nmi"] > 0.6 and rows[1]["nmi"] > 0.3  # planted blobs; measured 0.86 (k-means) and 0.56 (node)


def test_streaming_parts_benchmark_assigns_as_the_direct_call(tmp_path):
    t = time.perf_counter()
    rows = load("streaming_parts").main(["--n", "20000", "--dim", "8", "--k", "5", "--repeats", "1",
                                         "--dir", str(tmp_path)])
    wall = time.perf_counter() - t
    assert len(rows) == 1 and rows[0]["labels_equal"]  # the stage's blocks and the direct memory map: same labels
    parts = sum(v for k, v in rows[0].items() if k.startswith(("stage_", "direct_")))
    assert 0 < parts <= wall
    assert list(tmp_path.iterdir()) == []  # the data file removed
