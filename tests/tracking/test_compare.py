"""``sslcluster compare`` on run directories made by hand: grouping, mean ± std, outputs, and bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sslcluster.cli import main
from sslcluster.report.compare_page import fmt_cell
from sslcluster.tracking.compare import compare_runs, load_run, resolve_inputs, varying_keys


def make_run(root: Path, key: str, method: str, seed: int, metrics: dict, k: int = 10) -> Path:
    """A finished run directory: config.yaml (the keys compare looks at) and metrics.json."""
    path = root / key
    path.mkdir(parents=True)
    cfg = {"seed": seed, "run": {"key": key, "root": str(root), "tag": method},
           "method": {"name": method, "module": {"_target_": f"pkg.{method}.M"}},
           "clustering": {"name": "kmeans", "algorithm": {"k": k, "seed": seed}},
           "logger": {"name": "wandb", "group": f"g-{key}"}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.json").write_text(json.dumps({**metrics, "seed": seed}))
    return path


@pytest.fixture
def six_runs(tmp_path):
    """simclr and byol x seeds 0, 1, 2 with known metrics."""
    rng = np.random.default_rng(0)
    values = {}
    for method in ("simclr", "byol"):
        for seed in range(3):
            m = {"nmi": float(rng.uniform()), "acc": float(rng.uniform()), "knn_top1": float(rng.uniform()),
                 "n_clusters": 10}
            make_run(tmp_path / "runs", f"{method}-{seed}", method, seed, m)
            values[(method, seed)] = m
    return tmp_path / "runs", values


def test_groups_by_what_varies_with_mean_and_std(six_runs, tmp_path, capsys):
    root, values = six_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(root / "*"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    runs = [load_run(p) for p in sorted(root.iterdir())]
    assert varying_keys(runs) == ["method.name"]  # not the seed, its copy, run.* or logger.*; _target_ folded
    for method in ("byol", "simclr"):
        nmi = np.array([values[(method, s)]["nmi"] for s in range(3)])
        cell = f"{nmi.mean():.4f} ± {nmi.std(ddof=1):.4f}"
        line = next(ln for ln in printed.splitlines() if ln.startswith(f"| {method} |"))
        assert line.split(" | ")[1] == "3" and cell in line
    with open(out / "compare.csv", newline="") as f:
        rows = {r["method.name"]: r for r in csv.DictReader(f)}
    acc = np.array([values[("simclr", s)]["acc"] for s in range(3)])
    assert float(rows["simclr"]["acc_mean"]) == pytest.approx(acc.mean())
    assert float(rows["simclr"]["acc_std"]) == pytest.approx(acc.std(ddof=1))
    assert rows["byol"]["n_runs"] == "3" and rows["byol"]["knn_top1_n"] == "3"
    assert (out / "compare.md").read_text().strip() in printed
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "compare_runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_by_and_metrics_options(six_runs, tmp_path, capsys):
    root, values = six_runs
    assert main(["compare", str(root), "--by", "seed", "--metrics", "acc", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    header = next(ln for ln in printed.splitlines() if ln.startswith("| seed"))
    assert header == "| seed | n | acc |"
    acc0 = np.array([values[(m, 0)]["acc"] for m in ("simclr", "byol")])
    assert f"| 0 | 2 | {acc0.mean():.4f} ± {acc0.std(ddof=1):.4f} |" in printed
    assert main(["compare", str(root), "--by", "no.such.key"]) == 2
    assert "no.such.key" in capsys.readouterr().err


def test_bad_input_is_named_and_the_rest_compared(six_runs, tmp_path, capsys):
    root, values = six_runs
    not_a_run = tmp_path / "photos"
    not_a_run.mkdir()
    (not_a_run / "a.txt").write_text("x")
    unfinished = make_run(tmp_path / "other", "unfinished", "simclr", 5, {"nmi": 0.1})
    (unfinished / "metrics.json").unlink()
    partial = make_run(tmp_path / "other", "partial", "simclr", 7, {"nmi": 0.9, "acc": 0.5, "n_clusters": 10})
    out = tmp_path / "o"
    code = main(["compare", str(root / "simclr-*"), str(not_a_run), str(unfinished), str(partial),
                 str(tmp_path / "missing"), str(tmp_path / "nothing-*"), "--out", str(out)])
    assert code == 0
    cap = capsys.readouterr()
    err = cap.err
    assert f"{not_a_run}: not a run directory" in err
    assert f"{unfinished}: a run without metrics.json" in err
    assert f"{partial}: lacks knn_top1" in err
    assert f"{tmp_path / 'missing'}: no such file or folder" in err
    assert "nothing-*: the pattern matches nothing" in err
    # the four usable simclr runs form one group; knn_top1 averages over the three that have it
    assert "4 runs in 1 groups" in cap.out
    nmi = np.array([values[("simclr", s)]["nmi"] for s in range(3)] + [0.9])
    knn = np.array([values[("simclr", s)]["knn_top1"] for s in range(3)])
    row = next(ln for ln in cap.out.splitlines() if ln.startswith("| all |"))
    assert f"{nmi.mean():.4f} ± {nmi.std(ddof=1):.4f}" in row
    assert f"{knn.mean():.4f} ± {knn.std(ddof=1):.4f} (n=3)" in row


def test_nothing_to_compare_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sslcluster: error: nothing to compare") and str(empty) in err[-1]
    assert main(["compare"]) == 2
    assert main(["compare", "--bogus", str(empty)]) == 2
    assert "--bogus" in capsys.readouterr().err


def test_multirun_folder_pointers(tmp_path):
    from sslcluster.tracking.multirun import write_job_pointer

    runs = tmp_path / "runs"
    a = make_run(runs, "a", "simclr", 0, {"nmi": 0.5})
    sweep = runs / "multirun" / "20260101-000000"
    write_job_pointer(sweep / "0", sweep, "complete", ["seed=0"], 0, run_path=a)
    write_job_pointer(sweep / "1", sweep, "failed", ["seed=1"], 1, error="data.batch_size=9999 is larger")
    (sweep / "2").mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    found, problems = resolve_inputs([str(sweep)])
    assert found == [sweep / "../../a"] or [p.resolve() for p in found] == [a.resolve()]
    assert any("job 1 (seed=1) failed: data.batch_size=9999" in p for p in problems)
    assert any("job 2 has no run.json" in p for p in problems)
    comp = compare_runs([load_run(p) for p in found])
    assert comp.by == [] and len(comp.groups) == 1
    # the folder of multiruns (runs/multirun) means every multirun in it
    found_all, _ = resolve_inputs([str(sweep.parent)])
    assert [p.resolve() for p in found_all] == [a.resolve()]


def test_cell_format():
    assert fmt_cell(0.51234, 0.01, 3, 3) == "0.5123 ± 0.0100"
    assert fmt_cell(0.5, math.nan, 1, 2) == "0.5000 (n=1)"
    assert fmt_cell(10.0, 0.0, 2, 2) == "10 ± 0" and fmt_cell(10.0, math.nan, 1, 1) == "10"
    assert fmt_cell(math.nan, math.nan, 0, 2) == "-"


def test_compare_html_holds_the_table_the_plot_and_escaped_names(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in range(2):
        for method in ("simclr", "<script>alert(1)</script>"):
            make_run(root, f"{'m' if method == 'simclr' else 'x'}-{seed}", method, seed,
                     {"nmi": 0.5 + 0.1 * seed, "acc": 0.25})
    (root / "m-0" / "report.html").write_text("<!DOCTYPE html><p>run report</p>")
    out = tmp_path / "cmp"
    assert main(["compare", str(root), "--out", str(out)]) == 0
    html = (out / "compare.html").read_text()
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<img class="plot" src="compare.png"' in html and (out / "compare.png").is_file()
    assert f"{0.55:.4f} ± {np.std([0.5, 0.6], ddof=1):.4f}" in html  # the printed table's cells
    assert 'href="../runs/m-0/report.html"' in html and 'href="#def-nmi"' in html and 'id="def-nmi"' in html
    assert "compare.html" in capsys.readouterr().out
