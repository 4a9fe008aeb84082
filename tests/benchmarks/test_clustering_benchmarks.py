"""A tiny configuration of each benchmark script runs and reports sane figures."""

from __future__ import annotations

import importlib.util
import sys
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
    rows = load("kmeans_scale").main(["--quick", "--backends", "faiss:1,sklearn", "--iters", "5"])
    assert {r["backend"] for r in rows} == {"faiss/1t", "sklearn"}
    assert len(rows) == 4
    for r in rows:
        assert r["fit_s"] > 0 and 0 <= r["nmi"] <= 1 and 1 <= r["iters_run"] <= 5
    out = capsys.readouterr().out
    assert "load average" in out and out.count("NMI") == 4


def test_kmeans_benchmark_extrapolation_is_marked(capsys):
    rows = load("kmeans_scale").main(["--cases", "1000000:4:3", "--backends", "sklearn", "--iters", "4",
                                      "--sklearn-iters", "2"])
    assert rows[0]["iters_asked"] == 2 and rows[0]["extrapolated_fit_s"] == pytest.approx(rows[0]["fit_s"] * 2)
    assert "EXTRAPOLATED" in capsys.readouterr().out


def test_hdbscan_benchmark_quick():
    row = load("hdbscan_scale").main(["--quick", "--umap-dim", "0"])
    assert row["n"] == 2000 and row["hdbscan_s"] > 0 and 0 <= row["noise_fraction"] < 1
    assert row["n_clusters"] >= 1 and 0 <= row["nmi"] <= 1


def test_som_benchmark_quick():
    rows = load("som_scale").main(["--quick"])
    assert [r["mode"] for r in rows] == ["kmeans", "node"]
    assert all(r["fit_s"] > 0 and 0 <= r["nmi"] <= 1 for r in rows)
