"""The throughput benchmark in its tiny CPU configuration (the same script measures the H100 figures)."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_cpu_run_reports_every_mode_and_ratio(tmp_path, capsys):
    import time

    bench = _load()
    out = tmp_path / "r.json"
    t0 = time.perf_counter()
    res = bench.main(["--synthetic", "48", "--backbone", "tiny", "--batch-size", "16", "--steps", "2", "--warmup",
                      "1", "--workers", "0", "--precision", "fp32", "--channels-last", "--device", "cpu",
                      "--work-dir", str(tmp_path / "w"), "--json", str(out)])
    wall = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert set(res["modes"]) == {"model", "device", "trainer", "cpu", "lightly"}
    for name, r in res["modes"].items():
        # the rate is the timed steps' images (2 steps x 16, the warm-up step left out) over their time, which lies
        # inside the call's wall time: counting the warm-up, views or another batch size would break this
        assert r["img_s"] == pytest.approx(2 * 16 / r["seconds"], rel=1e-6), name
        assert 0 < r["seconds"] < wall, name
        assert r["loss"] == r["loss"], name  # finite loss: the step really trained
        assert f"  {name} " in text
    assert set(res["ratios"]) == {"device_over_lightly", "device_over_model", "device_over_cpu", "cpu_over_lightly",
                                  "trainer_over_lightly", "trainer_over_model", "trainer_over_device"}
    assert res["ratios"]["device_over_model"] == pytest.approx(res["modes"]["device"]["img_s"]
                                                               / res["modes"]["model"]["img_s"])
    assert "device/lightly:" in text and json.loads(out.read_text())["images"] == 48
    assert list((tmp_path / "w" / "cache").glob("*.npy"))  # the device mode went through the decoded cache


def test_archive_input_and_mode_selection(tmp_path):
    bench = _load()
    root = bench.synthetic_folder(20, 32, tmp_path / "src" / "cifar")
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    assert bench.prepare_data(str(archive), 0, 32, tmp_path / "w") == tmp_path / "w" / "imgs" / "cifar"
    res = bench.main(["--data", str(archive), "--work-dir", str(tmp_path / "w"), "--backbone", "tiny",
                      "--batch-size", "8", "--steps", "1", "--warmup", "0", "--workers", "0", "--precision",
                      "fp32", "--device", "cpu", "--modes", "model,device"])
    assert set(res["modes"]) == {"model", "device"} and set(res["ratios"]) == {"device_over_model"}
    with pytest.raises(SystemExit):
        bench.parse(["--modes", "model,bogus"])


def test_fidelity_tiny_cpu_trains_both_pipelines(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fidelity", SCRIPT.parent / "fidelity.py")
    fid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fid)
    out = tmp_path / "f.json"
    res = fid.main(["--epochs", "1", "--run-root", str(tmp_path / "runs"), "--json", str(out), "--",
                    "data.batch_size=128", "backbone.module.width=8", "backbone.module.depth=2",
                    f"data.device_cache.dir={tmp_path / 'cache'}", "export.batch_size=512"])
    assert set(res["summary"]) == {"cpu", "device"}
    import numpy as np

    from knn_reference import weighted_knn
    from sslcluster.evaluation.probes import knn_accuracy

    for run in [r for runs in res["runs"].values() for r in runs]:
        # each reported kNN figure is that of the run's exported embeddings and labels: recomputed by the same
        # code on them it is the same number (a figure scored on other features or labels would not be), and a
        # reference written here (weighted kNN, k=200, T=0.1, cosine) agrees up to the queries that are ties
        emb = Path(run["run"]) / "embeddings"
        tr, te = (np.load(emb / s / "embeddings.npy") for s in ("train", "test"))
        ytr, yte = (np.loadtxt(emb / s / "index.csv", delimiter=",", skiprows=1, usecols=2, dtype=np.int64,
                               comments=None) for s in ("train", "test"))
        assert run["knn_top1"] == knn_accuracy(tr, ytr, te, yte, k=200, t=0.1)
        ref, ties = weighted_knn(tr, ytr, te, yte, k=200, t=0.1)
        assert abs(run["knn_top1"] - ref) <= ties / len(yte), (run["knn_top1"], ref, ties)
        assert run["knn_top1"] > 0.3  # 10 classes: well above chance (0.1)
    assert "device - cpu" in capsys.readouterr().out and json.loads(out.read_text())["epochs"] == 1
    assert list((tmp_path / "cache").glob("*.npy"))  # the device run really took the device path


def test_fidelity_summary_pairs_by_seed_and_merges_parts(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fidelity", SCRIPT.parent / "fidelity.py")
    fid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fid)

    def run(pipe, seed, acc):
        return {"pipeline": pipe, "seed": seed, "knn_top1": acc, "train_s": 1.0}

    common = {"overrides": ["a=1"], "epochs": 2}
    a = {**common, "seeds": [1, 2], "runs": {"cpu": [run("cpu", 1, 0.50), run("cpu", 2, 0.40)],
                                             "device": [run("device", 1, 0.51)]}}  # seed 2 interrupted
    b = {**common, "seeds": [3, 4], "runs": {"cpu": [run("cpu", 3, 0.30), run("cpu", 4, 0.20)],
                                             "device": [run("device", 3, 0.302), run("device", 4, 0.198)]}}
    for name, part in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    res = fid.main(["summary", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert res["device_minus_cpu_per_seed"] == pytest.approx({1: 1.0, 3: 0.2, 4: -0.2})
    assert res["device_minus_cpu_points"] == pytest.approx(1.0 / 3)
    low, high = res["device_minus_cpu_ci90"]
    assert low < res["device_minus_cpu_points"] < high and res["device_verdict"].startswith("not decided")
    assert "device - cpu" in capsys.readouterr().out
    (tmp_path / "c.json").write_text(json.dumps({**b, "epochs": 3}))
    with pytest.raises(SystemExit):
        fid.main(["summary", str(tmp_path / "a.json"), str(tmp_path / "c.json")])


def test_fidelity_data_links_the_subset_and_resizes_the_photos(tmp_path):
    from PIL import Image

    spec = importlib.util.spec_from_file_location("fidelity_data", SCRIPT.parent / "fidelity_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "src" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(tmp_path / "src" / split / cls / f"{i:04d}.jpg")
    mod.main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--train", "2", "--low", "40",
              "--high", "44"])
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "cifar" / "train" / "a").iterdir()) == ["0000.jpg", "0001.jpg"]
    assert len(list((out / "cifar" / "test").rglob("*.jpg"))) == 6 and (out / "cifar/test/b/0002.jpg").is_symlink()
    sizes = [Image.open(p).size for p in sorted((out / "photo").rglob("*.png"))]
    assert len(sizes) == 10 and all(40 <= w <= 44 and 40 <= h <= 44 and w != h for w, h in sizes)
