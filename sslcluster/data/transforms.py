"""Deterministic evaluation transform. Training views come from lightly's transforms, chosen in
``configs/augmentation``."""

from __future__ import annotations

from typing import Sequence

import torchvision.transforms as T


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Resize the short side to ``image_size``, centre-crop, to tensor (C, H, W) in [0, 1], normalise."""
    return T.Compose([
        T.Resize(image_size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean=list(mean), std=list(std)),
    ])
