"""Torch datasets over an :class:`~sslcluster.data.sources.ImageSource`.

Neither returns a label: training and export see images and row positions only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from sslcluster.data.sources import ImageSource


class ImageDataset(Dataset):
    """Returns ``(image, i)`` with the deterministic evaluation transform applied."""

    def __init__(self, source: ImageSource, transform: Callable) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.transform(self.source.load(i)), i


class ViewsDataset(ImageDataset):
    """Returns ``(views, i)``: the list of augmented views of image i (each a tensor (C, H, W))."""

    def __getitem__(self, i: int):
        views = self.transform(self.source.load(i))
        if isinstance(views, torch.Tensor):
            views = [views]
        return list(views), i
