"""Shared fixtures: tiny configs that run the real code paths in seconds on a CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (the README's ``-n``), the workers share the machine's cores: each worker's torch (and the
# processes its tests start, which inherit the environment) gets its share of them instead of all of them, so two
# workers on two cores do not fight over four threads. Set before torch is imported; an explicit setting wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a seconds-long run on digits, with the run root in a temporary folder."""
    return [
        f"run.root={tmp_path / 'runs'}",
        "trainer.max_epochs=1",
        "data.batch_size=64",
        "backbone.module.width=8",
        "backbone.module.depth=2",
        "logger=none",
        "clustering.algorithm.n_init=1",
        "evaluate.linear_probe=false",
        "export.batch_size=256",
        "clustering.features=backbone",  # cluster embeddings/<split>; test_pipeline covers the projection default
        "evaluate.plots.enabled=false",  # pictures are tested in tests/evaluation/test_plots.py (UMAP compiles for a minute)
        "baselines=[pixels]",  # the pixels_umap baseline (UMAP again) is tested in tests/stages/test_pixels_umap.py
    ]


@pytest.fixture
def compose():
    from sslcluster.config import compose as _compose

    return _compose


@pytest.fixture
def tiny_timm(tiny):
    """``tiny`` with timm's tiny test ResNet as the backbone (random weights unless a test gives a file), its
    frozen-features transform at 32 px instead of the model's 160."""
    return [o for o in tiny if not o.startswith("backbone.module.")] + [
        "backbone=timm", "backbone.name=test_resnet", "backbone.image_size=32"]
