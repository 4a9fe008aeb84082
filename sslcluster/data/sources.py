"""Image sources: a uniform, indexable view of a split of a data set.

A source yields PIL images by position and carries, kept apart, the per-sample ids, paths and held-out labels.
Training code sees images only (see :mod:`sslcluster.data.datasets`); labels are read by evaluation and the
optional online monitors.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sslcluster.data.folders import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, Skipped, display_path, open_image,
                                  scan_folder)
from sslcluster.errors import SSLClusterError

log = logging.getLogger(__name__)

__all__ = ["SPLIT_FILE", "check_holdout_fraction", "holdout_split", "IMAGE_EXTENSIONS", "ImageSource", "DigitsSource", "ImageFolderSource", "TorchvisionSource",
           "digits_uint8", "labels_or_unknown"]


class ImageSource(Protocol):
    """What every source provides. ``labels`` (int64, -1 unknown) and ``classes`` may be None."""

    ids: list[str]
    paths: list[str]
    labels: np.ndarray | None
    classes: list[str] | None

    def __len__(self) -> int: ...

    def load(self, i: int) -> Image.Image:
        """Image ``i``, in the source's channel mode."""


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
        """Image ``i`` converted to the source's channel mode."""
        return _to_mode(self._images[i], self.channels)


#: name of the held-out split record in a run directory (``id,split`` rows; ids relative to the scanned folder)
SPLIT_FILE = "split.csv"
#: the folder's own splits: sub-folders with these names are used as they are
FOLDER_SPLITS = ("train", "test")


def check_holdout_fraction(fraction: float) -> float:
    """``fraction`` if it is a number in (0, 1), else a one-line error naming ``data.holdout_fraction``."""
    ok = isinstance(fraction, (int, float, np.integer, np.floating)) and not isinstance(fraction, bool) \
        and 0.0 < float(fraction) < 1.0
    if not ok:
        raise SSLClusterError(f"data.holdout_fraction={fraction!r} must be a number strictly between 0 and 1")
    return float(fraction)


def holdout_split(ids: list[str], labels: np.ndarray | None, fraction: float, seed: int,
                  root: str = "") -> dict[str, str]:
    """id -> ``train`` | ``test``: a seeded held-out test split of ``fraction`` of the images (scikit-learn's
    ``train_test_split``), stratified by ``labels`` when there are any, so every class is in both splits."""
    from sklearn.model_selection import train_test_split

    check_holdout_fraction(fraction)
    n = len(ids)
    where = f" of {root}" if root else ""
    if labels is not None:
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        n_test = int(np.ceil(fraction * n))
        if counts.min() < 2 or n_test < len(counts) or n - n_test < len(counts):
            raise SSLClusterError(
                f"data.holdout_fraction={fraction}: the {n} images{where} in {len(counts)} classes (smallest "
                f"{int(counts.min())}) cannot hold out at least one image per class in test and keep one in train "
                "(add images, change data.holdout_fraction, or give the folder train/ and test/ sub-folders)")
    elif n < 2 or int(np.ceil(fraction * n)) >= n:
        raise SSLClusterError(f"data.holdout_fraction={fraction}: {n} images{where} are too few to hold out a test "
                              "split and keep a train split")
    train_idx, test_idx = train_test_split(np.arange(n), test_size=fraction, random_state=seed,
                                           stratify=labels if labels is not None else None)
    out = {ids[i]: "train" for i in train_idx}
    out.update({ids[i]: "test" for i in test_idx})
    return out


def read_split_file(path: Path) -> dict[str, str]:
    """id -> split of a run's ``split.csv`` (ids as the scan gives them: see :func:`write_split_file`)."""
    from sslcluster.store.io import read_csv_rows

    reader = read_csv_rows(path)
    header = next(reader, None)
    if header != ["id", "split"]:
        raise SSLClusterError(f"{path}: expected columns id,split, got {header}")
    return {row[0]: row[1] for row in reader if len(row) >= 2}


def write_split_file(path: Path, assignment: dict[str, str]) -> None:
    """``split.csv`` (id,split rows, sorted), valid UTF-8: an id's undecodable bytes as ``\\xHH``
    (:func:`sslcluster.store.io.csv_escape`)."""
    from sslcluster.store.io import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, ("id", "split"), sorted(assignment.items()))


def held_out_rows(ids: list[str], labels: np.ndarray | None, split: str, fraction: float, seed: int,
                  split_file: str | None, where: str) -> list[int]:
    """Positions of the rows of ``split`` (``train`` | ``test``) among ``ids`` under the run's recorded held-out
    assignment ``split_file`` when there is one (ids added since are left out of both splits, with a warning), else
    a new seeded one (:func:`holdout_split`), written to ``split_file`` when given. ``where`` names the images in
    messages."""
    record = Path(split_file) if split_file else None
    if record is not None and record.is_file():
        assignment = read_split_file(record)
        new = [i for i in ids if i not in assignment]
        if new:
            log.warning("%d images of %s are not in the run's split record %s (added since it was made): left "
                        "out of both splits", len(new), where, record)
    else:
        assignment = holdout_split(ids, labels, fraction, seed, root=where)
        if record is not None:
            write_split_file(record, assignment)
    return [k for k, i in enumerate(ids) if assignment.get(i) == split]


class ImageFolderSource:
    """A folder of images, with or without its own ``train/`` and ``test/`` sub-folders.

    - With both ``root/train`` and ``root/test``, those are the splits.
    - Otherwise (no split folders, or only one of them, which is then the folder used), the images are split into a
      seeded held-out test split of ``holdout_fraction`` (stratified by class when there are labels) and a train
      split that share no file; ``holdout_seed`` is fixed apart from the training seed, so runs with different
      seeds score the same test images. With ``split_file`` (the stages pass ``<run>/split.csv``) the assignment
      is written there once and read back by every later stage and rerun of the run.
    - ``split='all'`` gives every image of the folder (both splits), e.g. to cluster a whole photo collection.

    With ``labels_from_folders`` the first folder level below the split root names the held-out class (class ids
    are shared by the splits). The folder is scanned and validated once (cached, see :mod:`sslcluster.data.folders`);
    bad files are left out under ``bad_files='skip'`` and listed in :attr:`skipped`, or stop the scan under
    ``bad_files='fail'``. ``split=None`` reads the whole folder as it is, without any split.
    """

    def __init__(self, root: str, split: str | None = "train", channels: int = 3,
                 labels_from_folders: bool = True, bad_files: str = "skip", max_pixels: int = DEFAULT_MAX_PIXELS,
                 validate: str = "full", cache: bool = True, cache_dir: str | None = None,
                 holdout_fraction: float = 0.2, holdout_seed: int = 0, split_file: str | None = None) -> None:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise SSLClusterError(f"image folder not found: {display_path(base)} (data.source.root)")
        if split not in (None, "train", "test", "all"):
            raise SSLClusterError(f"image folder split {split!r} is not one of train, test, all")
        own = [s for s in FOLDER_SPLITS if (base / s).is_dir()]
        scan_kw: dict[str, Any] = dict(policy=bad_files, max_pixels=int(max_pixels), validate=validate, cache=cache,
                       cache_dir=cache_dir)
        self.channels = channels
        self.max_pixels = int(max_pixels)
        self.skipped: list[Skipped] = []
        #: the split the skipped files are recorded under in the run (skipped_files.csv): None for the split being
        #: read; "all" for a folder without its own train/ and test/, whose scan (and bad files) both splits share
        self.skipped_split: str | None = None
        files: list[tuple[Path, str, tuple[str, ...]]] = []  # (path, id, parts below the split root)
        class_names: set[str] = set()  # first folder level of every readable image of both splits
        if split is not None and len(own) == len(FOLDER_SPLITS):  # the folder's own train/ and test/
            self.root = base
            for s in FOLDER_SPLITS:  # both scanned (cached) so that class ids are shared by the splits
                result = scan_folder(base / s, **scan_kw)
                rels = [f.relative_to(base / s) for f in map(Path, result.files)]
                class_names |= {r.parts[0] for r in rels if len(r.parts) > 1}
                if split not in ("all", s):
                    continue
                self.skipped += result.skipped
                for f, rel in zip(map(Path, result.files), rels):
                    files.append((f, f"{s}/{rel.as_posix()}" if split == "all" else rel.as_posix(), rel.parts))
        else:
            split_root = base / own[0] if split is not None and own else base
            if split is not None:
                check_holdout_fraction(holdout_fraction)
                if own:
                    log.info("%s has %s/ but no %s/: holding out data.holdout_fraction=%s of %s as the test split",
                             display_path(base), own[0], "test" if own[0] == "train" else "train",
                             holdout_fraction, display_path(split_root))
            result = scan_folder(split_root, **scan_kw)
            self.skipped, self.skipped_split = result.skipped, "all"
            self.root = split_root
            files = [(f, f.relative_to(split_root).as_posix(), f.relative_to(split_root).parts)
                     for f in map(Path, result.files)]
        self.classes = None
        labels = None
        if labels_from_folders and files and all(len(parts) > 1 for _, _, parts in files):
            # a class is a folder holding at least one readable image: an empty or all-bad folder is no class
            self.classes = sorted(class_names | {parts[0] for _, _, parts in files})
            lookup = {c: k for k, c in enumerate(self.classes)}
            labels = np.asarray([lookup[parts[0]] for _, _, parts in files], dtype=np.int64)
        if split in ("train", "test") and len(own) < len(FOLDER_SPLITS):
            files, labels = self._held_out(files, labels, split, float(holdout_fraction), int(holdout_seed),
                                           split_file)
        self.paths = [str(f) for f, _, _ in files]
        self.ids = [i for _, i, _ in files]
        self.labels = labels

    def _held_out(self, files, labels, split, fraction, seed, split_file):
        """The rows of ``split`` under the recorded (or a new, seeded, stratified) held-out assignment."""
        keep = held_out_rows([i for _, i, _ in files], labels, split, fraction, seed, split_file,
                             display_path(self.root))
        return [files[k] for k in keep], (labels[keep] if labels is not None else None)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """Image ``i`` read from its file (mode and pixel cap applied by ``open_image``)."""
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
        """Image ``i`` of the torchvision data set, converted to the source's channel mode."""
        return _to_mode(self._ds[i][0], self.channels)


def labels_or_unknown(source: ImageSource) -> np.ndarray:
    """The source's labels (N,) int64, or -1 for every image when it has none."""
    return source.labels if source.labels is not None else np.full(len(source), -1, dtype=np.int64)
