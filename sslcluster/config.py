"""Composing the Hydra config tree (``configs/``) from overrides, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError


def config_dir() -> Path:
    """``$SSLCLUSTER_CONFIG_DIR``, else the repository's ``configs/`` beside the package."""
    env = os.environ.get("SSLCLUSTER_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "configs")
    for c in candidates:
        if (c / "config.yaml").is_file():
            return c
    raise SSLClusterError(f"config tree not found (looked in {', '.join(map(str, candidates))}); "
                          "set SSLCLUSTER_CONFIG_DIR")


def hydra_error_line(e: BaseException) -> str:
    """Hydra's multi-line messages, with their causes, folded into one line."""
    parts: list[str] = []
    cur: BaseException | None = e
    while cur is not None:
        text = " ".join(line.strip() for line in str(cur).splitlines() if line.strip()
                        and not line.strip().startswith(("full_key:", "object_type=", "reference_type=")))
        if text and text not in parts:
            parts.append(text)
        cur = cur.__cause__ or cur.__context__
    return " | ".join(parts) or type(e).__name__


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved-and-checked config for ``overrides`` (``key=value``, ``group=option``, ``+key=value``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as e:  # hydra raises several types; all are the user's overrides at fault
        line = hydra_error_line(e)
        hint = _suggest(line, overrides)
        raise SSLClusterError(f"bad config override: {line}" + (f" -- {hint}" if hint else "")) from None
    check(cfg)
    return cfg


def _suggest(message: str, overrides: Sequence[str]) -> str | None:
    """The closest valid key, group or option to a misspelled one (see :mod:`sslcluster.config_help`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sslcluster.config_help import flat_keys, suggestion

    def keys(ovr: Sequence[str]) -> list[str]:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return flat_keys(hydra_compose(config_name="config", overrides=list(ovr)))

    try:
        return suggestion(message, list(overrides), config_dir(), keys)
    except Exception:  # a suggestion is a courtesy: never hide the error itself
        return None


def check(cfg: DictConfig) -> None:
    """Resolve every interpolation now, so a bad value is reported before any work starts."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:
        raise SSLClusterError(f"bad config: {hydra_error_line(e)}") from None


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
