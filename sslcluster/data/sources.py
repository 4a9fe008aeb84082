"""Image sources: a uniform, indexable view of a split of a data set.

A source yields PIL images by position and carries, kept apart, the per-sample ids, paths and held-out labels.
Training code sees images only (see :mod:`sslcluster.data.datasets`); labels are read by evaluation and the
optional online monitors.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from sslcluster.data.folders import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, Skipped, display_path, open_image,
                                  scan_folder)
from sslcluster.errors import SSLClusterError

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "DigitsSource", "ImageFolderSource", "TorchvisionSource",
           "digits_uint8", "labels_or_unknown"]


class ImageSource(Protocol):
    """What every source provides. ``labels`` (int64, -1 unknown) and ``classes`` may be None."""

    ids: list[str]
    paths: list[str]
    labels: np.ndarray | None
    classes: list[str] | None

    def __len__(self) -> int: ...

    def load(self, i: int) -> Image.Image: ...


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)


@lru_cache(maxsize=1)
def digits_uint8() -> np.ndarray:
    """All 1,797 digits as uint8 (N, 8, 8): scikit-learn's 0-16 grey levels scaled to 0-255."""
    from sklearn.datasets import load_digits

    return np.clip(load_digits().images * (255.0 / 16.0), 0, 255).astype(np.uint8)


class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), up-sampled to ``image_size``.

    The train/test split is stratified and fixed by ``split_seed`` (independent of the training seed, so runs
    with different seeds are scored on the same test images). ``split='all'`` gives every image.
    """

    def __init__(self, split: str = "train", image_size: int = 16, test_fraction: float = 0.2,
                 split_seed: int = 0, channels: int = 1) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in ("train", "test", "all"):
            raise SSLClusterError(f"digits split {split!r} is not one of train, test, all")
        if image_size < 8:
            raise SSLClusterError(f"data.image_size={image_size}: digits are 8x8, use 8 or more")
        target = load_digits().target
        n = len(target)
        train_idx, test_idx = train_test_split(np.arange(n), test_size=test_fraction, stratify=target,
                                               random_state=split_seed)
        order = {"train": np.sort(train_idx), "test": np.sort(test_idx), "all": np.arange(n)}[split]
        pixels = digits_uint8()[order]
        self._images = [Image.fromarray(p, mode="L").resize((image_size, image_size), Image.BILINEAR)
                        for p in pixels]
        self.channels = channels
        self.ids = [f"digits-{i}" for i in order]
        self.paths = [f"sklearn:load_digits[{i}]" for i in order]
        self.labels = target[order].astype(np.int64)
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self._images)

    def load(self, i: int) -> Image.Image:
        return _to_mode(self._images[i], self.channels)


class ImageFolderSource:
    """A folder of images, optionally with one sub-folder per split (``root/train``, ``root/test``).

    With ``labels_from_folders`` the first folder level below the split root names the held-out class. The folder
    is scanned and validated once (cached, see :mod:`sslcluster.data.folders`); bad files are left out under
    ``bad_files='skip'`` and listed in :attr:`skipped`, or stop the scan under ``bad_files='fail'``.
    """

    def __init__(self, root: str, split: str | None = "train", channels: int = 3,
                 labels_from_folders: bool = True, bad_files: str = "skip", max_pixels: int = DEFAULT_MAX_PIXELS,
                 validate: str = "full", cache: bool = True, cache_dir: str | None = None) -> None:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise SSLClusterError(f"image folder not found: {display_path(base)} (data.source.root)")
        split_root = base / split if split and (base / split).is_dir() else base
        result = scan_folder(split_root, policy=bad_files, max_pixels=int(max_pixels), validate=validate,
                             cache=cache, cache_dir=cache_dir)
        files = [Path(f) for f in result.files]
        self.root = split_root
        self.channels = channels
        self.max_pixels = int(max_pixels)
        self.skipped: list[Skipped] = result.skipped
        self.paths = [str(f) for f in files]
        self.ids = [f.relative_to(split_root).as_posix() for f in files]
        self.labels = None
        self.classes = None
        if labels_from_folders:
            tops = [f.relative_to(split_root).parts for f in files]
            if all(len(t) > 1 for t in tops):
                self.classes = sorted({t[0] for t in tops})
                lookup = {c: k for k, c in enumerate(self.classes)}
                self.labels = np.asarray([lookup[t[0]] for t in tops], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        return open_image(self.paths[i], self.channels, self.max_pixels)


_TORCHVISION = {
    "cifar10": ("CIFAR10", "train"),
    "cifar100": ("CIFAR100", "train"),
    "mnist": ("MNIST", "train"),
    "fashion_mnist": ("FashionMNIST", "train"),
    "stl10": ("STL10", "split"),
}


class TorchvisionSource:
    """CIFAR-10/100, MNIST, Fashion-MNIST or STL-10 from a local root; downloads only with ``download=true``."""

    def __init__(self, name: str, root: str, split: str = "train", download: bool = False,
                 channels: int = 3) -> None:
        import torchvision.datasets as tvd

        if name not in _TORCHVISION:
            raise SSLClusterError(f"unknown torchvision data set {name!r}; valid: {', '.join(_TORCHVISION)}")
        cls_name, style = _TORCHVISION[name]
        cls = getattr(tvd, cls_name)
        kwargs = {"train": split == "train"} if style == "train" else {"split": split}
        try:
            self._ds = cls(root=str(Path(root).expanduser()), download=download, **kwargs)
        except RuntimeError as e:
            raise SSLClusterError(f"{name} not found under {root}: {e} "
                                  "(set data.source.download=true to download it)") from None
        targets = getattr(self._ds, "targets", None)
        if targets is None:
            targets = getattr(self._ds, "labels")
        self.labels = np.asarray(targets, dtype=np.int64)
        self.classes = list(getattr(self._ds, "classes", [])) or None
        self.channels = channels
        self.ids = [f"{name}-{split}-{i}" for i in range(len(self._ds))]
        self.paths = [f"torchvision:{name}/{split}[{i}]" for i in range(len(self._ds))]

    def __len__(self) -> int:
        return len(self._ds)

    def load(self, i: int) -> Image.Image:
        return _to_mode(self._ds[i][0], self.channels)


def labels_or_unknown(source: ImageSource) -> np.ndarray:
    return source.labels if source.labels is not None else np.full(len(source), -1, dtype=np.int64)
