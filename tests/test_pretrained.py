"""Pretrained backbones in the pipeline, offline (timm's tiny test ResNet with random weights saved to files):
frozen features without a checkpoint on digits and on an image folder, the same file giving the same embeddings
and another file other ones, pretrained baselines beside learned and pixels in metrics.json, the report and
``compare``, and one-line errors for bad weights files and baseline entries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")

from sslcluster.cli import main  # noqa: E402
from sslcluster.pipeline import run_pipeline, stage_evaluate, stage_export  # noqa: E402
from sslcluster.store.io import file_sha256  # noqa: E402

MODEL = "test_resnet"


def weights_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(timm.create_model(MODEL, num_classes=0).state_dict(), path)
    return path


def embeddings(run: Path, name: str) -> np.ndarray:
    return np.load(run / "embeddings" / name / "embeddings.npy")


def test_baseline_entries_and_prefixes():
    from sslcluster.errors import SSLClusterError
    from sslcluster.store.representations import baseline_prefixes, key_prefix, metric_prefix, parse_baseline

    assert parse_baseline("pixels") == ("pixels", None)
    assert parse_baseline("timm:vit_small_patch14_dinov2.lvd142m") == ("timm:vit_small_patch14_dinov2.lvd142m", None)
    assert parse_baseline("timm:resnet18@/w/r.safetensors") == ("timm:resnet18", "/w/r.safetensors")
    for bad in ("timm:", "timm:resnet18@", "resnet18", "timm:a b"):
        with pytest.raises(SSLClusterError, match="baselines entry"):
            parse_baseline(bad)
    assert metric_prefix("timm:vit_small_patch14_dinov2.lvd142m") == "timm_vit_small_patch14_dinov2_lvd142m_"
    assert key_prefix("timm:resnet18") == "timm_resnet18-" and key_prefix("learned") == ""
    keys = ["nmi", "pixels_nmi", "timm_resnet18_nmi", "timm_resnet18_knn_top1", "timm_a_b_acc", "val_nmi"]
    assert baseline_prefixes(keys, ["nmi", "acc", "knn_top1"]) == ["pixels_", "timm_resnet18_", "timm_a_b_"]


def test_frozen_features_without_a_checkpoint_same_file_same_embeddings(tiny_timm, compose, tmp_path):
    w1, w2 = weights_file(tmp_path / "a.pth", 1), weights_file(tmp_path / "b.pth", 2)
    frozen = tiny_timm + ["stages.pretrain=false", "stages.baseline=false"]
    only_export = ["stages.cluster=false", "stages.evaluate=false"]
    # clustering.features=projection (the default) is switched to the backbone's features: there is no head
    a = run_pipeline(compose(frozen + ["run.key=a", f"backbone.weights={w1}", "clustering.features=projection"])).path
    metrics = json.loads((a / "metrics.json").read_text())
    assert {"nmi", "acc", "knn_top1"} <= set(metrics) and "time_pretrain_s" not in metrics
    assert not any((a / "checkpoints").glob("*.ckpt"))
    assert "features: backbone" in (a / "config.yaml").read_text()
    manifest = json.loads((a / "embeddings" / "test" / "manifest.json").read_text())
    assert manifest["checkpoint"] is None and manifest["backbone"]["weights_sha256"] == file_sha256(w1)
    assert embeddings(a, "test").shape == (360, 96)
    b = run_pipeline(compose(frozen + only_export + ["run.key=b", f"backbone.weights={w1}"])).path
    c = run_pipeline(compose(frozen + only_export + ["run.key=c", f"backbone.weights={w2}"])).path
    for split in ("train", "test"):
        assert np.array_equal(embeddings(a, split), embeddings(b, split))
        assert not np.allclose(embeddings(a, split), embeddings(c, split), atol=1e-3)
    # the export stage alone does the same
    d = stage_export(compose(tiny_timm + ["run.key=d", "stages.pretrain=false", f"backbone.weights={w1}",
                                          "export.splits=[test]"])).path
    assert np.array_equal(embeddings(a, "test"), embeddings(d, "test"))


def test_frozen_features_on_an_image_folder(tiny_timm, compose, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLCLUSTER_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c, level in (("dark", 40), ("bright", 210)):
        (root / c).mkdir(parents=True)
        for i in range(12):
            px = np.clip(rng.normal(level, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / c / f"{i:02d}.png")
    w = weights_file(tmp_path / "w.pth", 1)
    folder = [o for o in tiny_timm if o != "data.batch_size=64"] + [
        "data=image_folder", f"data.source.root={root}", "data.num_workers=0", "data.batch_size=8",
        "clustering.algorithm.k=2", "stages.pretrain=false", f"backbone.weights={w}"]
    run = run_pipeline(compose(folder + ["run.key=f"])).path
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_points"] == 5 and "nmi" in metrics and "pixels_nmi" in metrics  # 20 % of 24 held out
    assert embeddings(run, "train").shape == (19, 96) and (run / "split.csv").is_file()


def test_pretrained_baseline_beside_learned_and_pixels(tiny, tiny_timm, compose, tmp_path, capsys):
    w = weights_file(tmp_path / "w.pth", 1)
    run = run_pipeline(compose(tiny + ["run.key=l", f"baselines=[pixels,timm:{MODEL}@{w}]", "baseline_image_size=32",
                                       "+trainer.limit_train_batches=3"])).path
    prefix = "timm_test_resnet_"
    metrics = json.loads((run / "metrics.json").read_text())
    for p in ("", "pixels_", prefix):
        assert {p + "nmi", p + "acc", p + "knn_top1"} <= set(metrics), p
    record = json.loads((run / "clusters" / "timm_test_resnet-kmeans-test" / "record.json").read_text())
    assert record["representation"] == f"timm:{MODEL}" and record["primary"] is True
    out = capsys.readouterr().out
    assert "timm_test_resnet" in out.split("clusters/")[0]  # the printed table has its column
    html = (run / "report.html").read_text()
    assert "<th>timm_test_resnet</th>" in html and "learned − timm_test_resnet" in html
    # the baseline's features are the frozen features of the same file (same transform, same images)
    frozen = run_pipeline(compose(tiny_timm + ["run.key=fz", "stages.pretrain=false", f"backbone.weights={w}",
                                               "stages.baseline=false", "stages.cluster=false",
                                               "stages.evaluate=false"])).path
    assert np.array_equal(embeddings(run, prefix + "test"), embeddings(frozen, "test"))
    # evaluating the run again rebuilds every representation's summary from the records
    data = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in data.items() if not k.startswith(prefix)}))
    stage_evaluate(compose(tiny + ["run.key=l"]))
    again = json.loads((run / "metrics.json").read_text())
    assert again[prefix + "nmi"] == metrics[prefix + "nmi"] and again[prefix + "knn_top1"] == metrics[prefix + "knn_top1"]
    # compare shows the baseline beside the learned and pixel figures
    from sslcluster.tracking.compare import compare_runs, load_run

    comp = compare_runs([load_run(run)])
    from sslcluster.evaluation.registry import HEADLINE

    assert [m for m in comp.metrics if m.startswith(prefix)] == [prefix + m for m in HEADLINE if prefix + m in metrics]
    assert comp.metrics.index("nmi") < comp.metrics.index("pixels_nmi") < comp.metrics.index(prefix + "nmi")


def test_bad_weights_and_baseline_entries_are_one_line_and_leave_no_run(tiny, tiny_timm, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    cases = [
        (tiny_timm + ["stages.pretrain=false", f"backbone.weights={junk}"], str(junk)),
        (tiny_timm + ["stages.pretrain=false", f"backbone.weights={tmp_path / 'none.pth'}"], "none.pth"),
        (tiny + ["stages.pretrain=false"], "backbone.weights=PATH"),  # a backbone with nothing to load
        (tiny + [f"baselines=[pixels,timm:{MODEL}@{junk}]"], str(junk)),
        (tiny + ["baselines=[pixels,resnet18]"], "'resnet18'"),
    ]
    for overrides, words in cases:
        assert main(["run", *overrides, "run.key=bad"]) == 2, overrides
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
        assert not (tmp_path / "runs" / "bad").exists()
