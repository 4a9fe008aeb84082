"""What a folder's images are like, from a seeded sample: grayscale or colour, their typical size, per-channel
mean and standard deviation, and whether class folders give held-out labels. The data-aware defaults of an image
folder (``data.channels=auto`` and the like) are decided from these facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sslcluster.data.transforms import eval_transform

#: a colour image whose channels differ by less than this (mean absolute difference, grey levels of 255) counts as
#: grayscale: JPEG's chroma subsampling leaves such small differences in gray photographs saved as RGB
GRAY_TOLERANCE = 1.0


@dataclass
class ImageFacts:
    """Facts of a train split, from ``sampled`` of its ``images`` images."""

    images: int
    sampled: int
    grayscale: bool                 # every sampled image is grayscale
    short_side: int                 # median short side of the sampled images, pixels
    classes: int | None             # number of held-out classes (class folders); None: no labels
    mean: list[float] | None = None  # per channel, in [0, 1], at ``stats_size``
    std: list[float] | None = None
    stats_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for the run's record)."""
        return asdict(self)


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``sample`` of ``n`` rows."""
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def is_grayscale(img: Image.Image) -> bool:
    """Whether ``img`` (any mode) carries no colour: a one-channel mode, or RGB whose channels agree within
    :data:`GRAY_TOLERANCE`."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    if a.size == 0:
        return True
    return bool(np.abs(a[..., 0] - a[..., 1]).mean() < GRAY_TOLERANCE
                and np.abs(a[..., 1] - a[..., 2]).mean() < GRAY_TOLERANCE)


def inspect_images(load: Any, n: int, classes: Sequence[str] | None, sample: int = 512, seed: int = 0) -> ImageFacts:
    """Mode and size facts of a seeded sample of ``n`` images; ``load(i)`` returns image ``i`` as RGB (PIL)."""
    rows = sample_rows(n, sample, seed)
    gray, sides = True, []
    for i in rows:
        img = load(int(i))
        sides.append(min(img.size))
        gray = gray and is_grayscale(img)
    return ImageFacts(images=n, sampled=len(rows), grayscale=gray,
                      short_side=int(np.median(sides)) if sides else 0,
                      classes=len(classes) if classes else None)


def channel_stats(load: Any, n: int, channels: int, image_size: int, sample: int = 512,
                  seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (in [0, 1]) of the sampled images as the model sees them: in
    ``channels`` (1: L, 3: RGB), short side resized to ``image_size`` and centre-cropped."""
    to_tensor = eval_transform(image_size, [0.0] * channels, [1.0] * channels)
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for i in sample_rows(n, sample, seed):
        img = load(int(i))
        img = img.convert("L" if channels == 1 else "RGB")
        x = to_tensor(img).numpy().reshape(channels, -1).astype(np.float64)
        total += x.sum(axis=1)
        squares += (x * x).sum(axis=1)
        count += x.shape[1]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel: leave it unscaled
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
