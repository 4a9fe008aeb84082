"""Load the image behind an ``index.csv`` path, for pictures, per-cluster folders and naming.

Paths are file paths (image folders) or source references written by the built-in sources:
``sklearn:load_digits[i]`` and ``torchvision:<name>/<split>[i]`` (the latter needs the data set's root).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from PIL import Image

from sslcluster.data.folders import open_image
from sslcluster.data.sources import digits_uint8
from sslcluster.errors import SSLClusterError

_DIGITS = re.compile(r"^sklearn:load_digits\[(\d+)\]$")
_TV = re.compile(r"^torchvision:([a-z0-9_]+)/([a-z]+)\[(\d+)\]$")


def load_image(path: str, torchvision_root: str | None = None) -> Image.Image:
    """The image (RGB or L, EXIF orientation applied) that an index row's ``path`` refers to."""
    m = _DIGITS.match(path)
    if m:
        return Image.fromarray(digits_uint8()[int(m.group(1))], mode="L")
    m = _TV.match(path)
    if m:
        if torchvision_root is None:
            raise SSLClusterError(f"{path}: torchvision images need the data set root (data.source.root)")
        src = _tv_source(m.group(1), torchvision_root, m.group(2))
        return src.load(int(m.group(3)))
    if not Path(path).is_file():
        raise SSLClusterError(f"image not found: {path}")
    return open_image(path, channels=3)  # the scanner's decoder: 16-bit, alpha, palette, CMYK, bomb guard


@lru_cache(maxsize=4)
def _tv_source(name: str, root: str, split: str):
    from sslcluster.data.sources import TorchvisionSource

    return TorchvisionSource(name, root, split)
