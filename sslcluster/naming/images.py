"""Images as base64 data URLs for a vision model: resized to a maximum side, encoded, MIME type stated."""

from __future__ import annotations

import base64
import hashlib
import io
import math
from dataclasses import dataclass

from PIL import Image

from sslcluster.errors import SSLClusterError

FORMATS = ("auto", "png", "jpeg")
_MIME = {"png": "image/png", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class EncodedImage:
    """One image ready to send: ``data_url`` is ``data:<mime>;base64,<bytes>``."""

    mime: str
    data_url: str
    width: int
    height: int
    nbytes: int
    sha256: str  # of the encoded bytes: part of the cache key


def choose_format(fmt: str, source: str) -> str:
    """``png`` or ``jpeg``: ``auto`` keeps JPEG for JPEG files and uses lossless PNG for everything else."""
    if fmt not in FORMATS:
        raise SSLClusterError(f"naming.images.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    return "jpeg" if source.lower().endswith((".jpg", ".jpeg")) else "png"


def resize(img: Image.Image, max_side: int, min_side: int = 0) -> Image.Image:
    """Shrink so the longer side is at most ``max_side`` (keeping the aspect ratio); enlarge an image whose longer
    side is under ``min_side`` by a whole factor, pixel for pixel, so tiny images stay sharp."""
    if max_side < 1:
        raise SSLClusterError(f"naming.images.max_side must be positive, got {max_side}")
    if min_side > max_side:
        raise SSLClusterError(f"naming.images.min_side ({min_side}) is larger than naming.images.max_side "
                              f"({max_side})")
    w, h = img.size
    side = max(w, h)
    if side > max_side:
        scale = max_side / side
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    if min_side and side < min_side:
        factor = min(math.ceil(min_side / side), max_side // side)
        if factor > 1:
            return img.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    return img


def encode_image(img: Image.Image, source: str, max_side: int, min_side: int = 0, fmt: str = "auto",
                 jpeg_quality: int = 90) -> EncodedImage:
    """Resize and encode ``img`` (read from ``source``, which decides the ``auto`` format) as a data URL."""
    kind = choose_format(fmt, source)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img = resize(img, max_side, min_side)
    buf = io.BytesIO()
    if kind == "jpeg":
        img.save(buf, format="JPEG", quality=int(jpeg_quality))
    else:
        img.save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    mime = _MIME[kind]
    return EncodedImage(mime, f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", img.size[0],
                        img.size[1], len(data), hashlib.sha256(data).hexdigest())
