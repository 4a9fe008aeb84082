"""Names of the representations a run compares, and where each one's files and metrics go.

``learned`` (the run's own features: prefix ``""``), ``pixels`` (raw pixels: ``pixels_``), ``pixels_umap`` (UMAP of
the raw pixels: ``pixels_umap_``) and pretrained
backbones ``timm:<model>`` (``timm_<model>_``, the model name's dots and dashes made underscores). A
representation's embeddings are ``embeddings/<prefix><split>``, its metrics ``<prefix><metric>`` in
``metrics.json`` and its clustering ``clusters/<key prefix><cluster key>`` (the metric prefix with a dash:
``pixels-``, ``timm_<model>-``).
"""

from __future__ import annotations

import re
from typing import Iterable

from sslcluster.errors import SSLClusterError

LEARNED = "learned"
PIXELS = "pixels"
PIXELS_UMAP = "pixels_umap"
TIMM = "timm:"


def parse_baseline(entry: str) -> tuple[str, str | None]:
    """A ``baselines`` entry -> (representation name, weights file or None): ``pixels``, ``timm:NAME`` (timm's
    pretrained weights from its hub cache) or ``timm:NAME@PATH`` (a local state dict)."""
    text = str(entry).strip()
    if text in (PIXELS, PIXELS_UMAP):
        return text, None
    if text.startswith(TIMM) and len(text) > len(TIMM):
        model, _, weights = text[len(TIMM):].partition("@")
        if model and re.fullmatch(r"[A-Za-z0-9_.\-]+", model) and (not _ or weights):
            return TIMM + model, weights or None
    raise SSLClusterError(f"baselines entry {entry!r}: expected pixels, pixels_umap, timm:MODEL or "
                          "timm:MODEL@WEIGHTS_FILE")


def metric_prefix(name: str) -> str:
    """The prefix of a representation's metrics and embeddings folders: ``""``, ``pixels_``, ``timm_<model>_``."""
    if name == LEARNED:
        return ""
    if name == PIXELS:
        return "pixels_"
    if name == PIXELS_UMAP:
        return "pixels_umap_"
    if name.startswith(TIMM):
        return "timm_" + re.sub(r"[^A-Za-z0-9]", "_", name[len(TIMM):]) + "_"
    raise SSLClusterError(f"unknown representation {name!r}: learned, pixels, pixels_umap or timm:MODEL")


def key_prefix(name: str) -> str:
    """The prefix of a representation's clustering keys: ``""``, ``pixels-``, ``timm_<model>-``."""
    p = metric_prefix(name)
    return p[:-1] + "-" if p else ""


def baseline_prefixes(keys: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """The baseline prefixes present among ``keys`` (``metrics.json`` keys) before one of ``metrics``: ``pixels_``
    first, ``pixels_umap_`` next, then the ``timm_..._`` ones in the order met."""
    keys = list(keys)
    found: list[str] = []
    for m in metrics:
        for k in keys:
            if k.endswith("_" + m) and (k.startswith("pixels_") or k.startswith("timm_")):
                p = k[: -len(m)]
                if p not in found and (p in ("pixels_", "pixels_umap_") or p.startswith("timm_")):
                    found.append(p)
    return sorted(found, key=lambda p: (p != "pixels_", p != "pixels_umap_", found.index(p)))


def display_name(prefix: str) -> str:
    """A column title for a metric prefix: ``learned``, ``pixels``, ``timm_resnet18``."""
    return prefix.rstrip("_") or LEARNED
