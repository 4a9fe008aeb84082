"""Data-aware defaults of an image folder: decided from a seeded sample, printed, written to the run's config,
overridable; an unlabelled flat folder runs end to end with no override."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from sslcluster.config import compose
from sslcluster.pipeline import run_pipeline
from sslcluster.stages.data_defaults import resolve_data_defaults


def photo(rng: np.random.Generator, side: int, gray: bool) -> Image.Image:
    """A smooth random image (low-frequency pattern), colour or grayscale."""
    base = rng.random((4, 4, 3))
    img = Image.fromarray((base * 255).astype(np.uint8), "RGB").resize((side, side), Image.BILINEAR)
    return img.convert("L") if gray else img


@pytest.fixture
def gray_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "gray"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(40):
            photo(rng, 28, gray=True).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def flat_colour_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(90):
        photo(rng, int(rng.integers(40, 60)), gray=False).save(root / f"img {i}.jpg")
    return root


def test_grayscale_folder_defaults_are_decided_printed_and_overridable(gray_folder, tmp_path, capsys):
    base = [f"run.root={tmp_path / 'runs'}", "data=image_folder", f"data.source.root={gray_folder}"]
    cfg = compose(base)
    decided = resolve_data_defaults(cfg)
    out = capsys.readouterr().out
    assert cfg.data.channels == 1 and cfg.data.image_size == 28 and cfg.data.num_classes == 3
    assert len(cfg.data.mean) == 1 and 0 < cfg.data.std[0] < 1
    assert cfg.clustering.algorithm.k == 3 and cfg.clustering.split == "test"
    assert cfg.backbone.module.in_channels == 1
    assert cfg.data.batch_size == 32  # 96 train images (holdout 20%): a power of two within half of them
    views = cfg.augmentation.views  # the method's photo views (SimCLR's) without colour operations
    assert cfg.augmentation.name == "simclr" and views.cj_sat == 0 and views.cj_hue == 0
    assert views.random_gray_scale == 0 and views.hf_prob == 0.5
    assert "channels=1" in out and "image_size=28" in out and "augmentation=simclr" in out
    assert set(decided) >= {"data.channels", "data.image_size", "data.num_classes"}
    # every explicit value wins
    cfg = compose(base + ["data.channels=3", "data.image_size=16", "augmentation=digits", "data.num_classes=7",
                          "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]", "clustering.split=all"])
    resolve_data_defaults(cfg)
    assert cfg.data.channels == 3 and cfg.data.image_size == 16 and cfg.augmentation.name == "digits"
    assert cfg.clustering.algorithm.k == 7 and list(cfg.data.mean) == [0.5] * 3 and cfg.clustering.split == "all"


def test_colour_photos_keep_their_colour_views_and_are_never_upsampled(flat_colour_folder, tmp_path):
    cfg = compose([f"run.root={tmp_path / 'runs'}", "data=image_folder", f"data.source.root={flat_colour_folder}",
                   "method=moco"])
    resolve_data_defaults(cfg)
    assert cfg.data.channels == 3 and len(cfg.data.mean) == 3
    assert 40 <= cfg.data.image_size <= 60  # the median short side of the sampled images, not up-sampled
    assert cfg.augmentation.name == "moco" and cfg.augmentation.views.cj_prob == 0.8  # MoCo v2's own views
    assert cfg.data.num_classes is None and cfg.clustering.select_k.method == "silhouette"
    assert cfg.clustering.split == "all"


def test_unlabelled_flat_folder_runs_end_to_end_with_label_free_figures(flat_colour_folder, tmp_path, tiny, caplog):
    keep = [o for o in tiny if not o.startswith(("data.batch_size", "clustering.features"))]
    cfg = compose(keep + ["data=image_folder", f"data.source.root={flat_colour_folder}", "data.num_workers=0",
                          "data.auto.max_image_size=16", "clustering.select_k.k_max=4"])
    run = run_pipeline(cfg)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert (run.path / "report.html").is_file()
    assert "silhouette" in metrics and "intra_var" in metrics and "nmi" not in metrics and "knn_top1" not in metrics
    assert 2 <= metrics["n_clusters"] <= 4
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["data"]["channels"] == 3 and saved["clustering"]["split"] == "all"
    assert saved["data"]["image_size"] == 16 and saved["augmentation"]["name"] == "simclr"
    said = [r.getMessage() for r in caplog.records if "no held-out labels" in r.getMessage()]
    assert said and len(said) == len(set(said))  # said, and each thing once


@pytest.mark.parametrize("native", [True, False])
def test_precision_follows_the_devices_bf16_support_and_an_explicit_setting_wins(gray_folder, tmp_path, native,
                                                                                monkeypatch):
    import sslcluster.stages.data_defaults as dd

    monkeypatch.setattr(dd, "native_bf16", lambda accelerator: native)
    base = [f"run.root={tmp_path / 'runs'}", "data=image_folder", f"data.source.root={gray_folder}"]
    cfg = compose(base)
    resolve_data_defaults(cfg)
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert cfg.trainer.speed.channels_last is native
    cfg = compose(base + ["trainer.precision=32-true", "trainer.speed.channels_last=false"])
    resolve_data_defaults(cfg)
    assert cfg.trainer.precision == "32-true" and cfg.trainer.speed.channels_last is False
    assert cfg.data.precision == "32-true"  # the record agrees with what trains


def test_digits_default_keeps_float32(tmp_path):
    cfg = compose([f"run.root={tmp_path / 'runs'}"])
    resolve_data_defaults(cfg)
    assert cfg.trainer.precision == "32-true" and cfg.trainer.speed.channels_last is False
