"""A run's saved ``config.yaml``, read as a plain mapping in today's layout, whatever version wrote it.

Runs made before the clustering stage's settings (``split``, ``features``, ``key``, ``overwrite``) moved under
``clustering`` saved them in a top-level ``cluster`` block; :func:`current_layout` reads that block as
``clustering.<setting>``, so every reader of a saved config asks for today's keys only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

#: the block the clustering stage's settings were saved in by older versions, and where they are now
OLD_SECTION, SECTION = "cluster", "clustering"
CONFIG = "config.yaml"


def current_layout(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved config (plain mapping) in today's layout: an older top-level ``cluster`` block's settings under
    ``clustering`` (a setting present in both places keeps the ``clustering`` one). Other configs are returned as
    they are."""
    old = cfg.get(OLD_SECTION)
    if not isinstance(old, dict):
        return cfg
    out = {k: v for k, v in cfg.items() if k != OLD_SECTION}
    section = out.get(SECTION)
    out[SECTION] = {**old, **(section if isinstance(section, dict) else {})}
    return out


def read_run_config(run_path: str | os.PathLike) -> dict[str, Any]:
    """``<run>/config.yaml`` in today's layout; empty when missing or unreadable (a config is not needed to read
    a run's other files)."""
    path = Path(run_path) / CONFIG
    if not path.is_file():
        return {}
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return current_layout(cfg) if isinstance(cfg, dict) else {}


def own_cluster_key(cfg: dict[str, Any]) -> str | None:
    """The key of the clustering a run's own config made (``clustering.key``, else ``<algorithm>-<split>``),
    without a representation's prefix; None when the config does not say."""
    section = cfg.get(SECTION)
    if not isinstance(section, dict):
        return None
    if section.get("key"):
        return str(section["key"])
    if section.get("name") and section.get("split"):
        return f"{section['name']}-{section['split']}"
    return None
