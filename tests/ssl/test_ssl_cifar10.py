"""CIFAR-10 from the image-folder path (the JPEG copy in ``../shared/data``): a short CPU run of each method.

Slow (``-m slow``); skipped when the archive is absent. The quality figures on a GPU belong to the GPU
performance issue; this checks that every method runs on real images through the folder path.
"""

from __future__ import annotations

import csv
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from ssl_helpers import METHODS, augmentation_for

from sslcluster.config import compose
from sslcluster.pipeline import run_pipeline

ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.tar.gz"
CANDIDATES = [ARCHIVE, Path("/work/shared/data/cifar10-jpeg.tar.gz")]
PER_CLASS = {"train": 100, "test": 20}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def cifar10_subset(tmp_path_factory) -> Path:
    """The first PER_CLASS[split] images of each class of each split, extracted into a temporary folder."""
    archive = next((p for p in CANDIDATES if p.is_file()), None)
    if archive is None:
        pytest.skip(f"CIFAR-10 archive not found (looked for {', '.join(map(str, CANDIDATES))})")
    root = tmp_path_factory.mktemp("cifar10")
    counts: Counter[tuple[str, str]] = Counter()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            parts = parts[parts.index("train"):] if "train" in parts else parts[parts.index("test"):] \
                if "test" in parts else ()
            if not member.isfile() or len(parts) != 3:
                continue
            split, cls, name = parts
            if counts[split, cls] >= PER_CLASS[split]:
                continue
            counts[split, cls] += 1
            dest = root / split / cls / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            dest.write_bytes(src.read())
    assert sum(counts.values()) == 10 * sum(PER_CLASS.values()), counts
    return root


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_on_cifar10_folder(method, cifar10_subset, tmp_path):
    cfg = compose([
        f"run.root={tmp_path}", f"run.key={method}", f"method={method}", f"augmentation={augmentation_for(method)}",
        "data=cifar10_folder", f"data.source.root={cifar10_subset}", "data.batch_size=64", "data.num_workers=0",
        "backbone.module.width=16", "backbone.module.depth=2", "trainer.max_epochs=2", "logger=csv",
        "clustering.algorithm.n_init=1", "evaluate.linear_probe=false", "monitor.linear_epochs=2",
        "monitor.every_n_epochs=1",
        *(["method.module.queue_size=512"] if method == "moco" else []),
        *(["augmentation.views.local_crop_size=16", "method.views=8"] if method == "dino" else []),
    ])
    run = run_pipeline(cfg)
    metrics = json.loads((run.path / "metrics.json").read_text())
    print(method, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    assert (run.path / "checkpoints" / "last.ckpt").is_file()
    # the whole test split clustered into the classes' number of clusters, scored against every held-out label
    assert (metrics["n_points"], metrics["n_clusters"], metrics["n_labeled"]) == (200, 10, 200)
    assert math.isfinite(metrics["knn_top1"]) and math.isfinite(metrics["pixels_knn_top1"])
    with open(run.path / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)  # one finite loss per epoch
    monitored = [r for r in rows if r.get("monitor/knn_top1")]
    assert len(monitored) == 2 and all(r.get("monitor/linear_top1") for r in monitored)  # the monitors every epoch
