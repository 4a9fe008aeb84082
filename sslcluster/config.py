"""Composing the Hydra config tree (``configs/``) from overrides, with one-line errors."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError

log = logging.getLogger(__name__)

#: the clustering stage's settings, once a top-level ``cluster`` block, now under ``clustering`` beside what the
#: ``clustering`` group chooses (algorithm, preprocess, select_k). ``cluster.<setting>`` overrides still work.
STAGE_SETTINGS = ("split", "features", "key", "overwrite")
OLD_SECTION, SECTION = "cluster", "clustering"
_OLD_KEY = re.compile(rf"^(?P<op>[+~]*){OLD_SECTION}\.(?P<name>{'|'.join(STAGE_SETTINGS)})(?P<rest>=.*)?$", re.S)


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


def rename_old_keys(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with the older spelling of a clustering stage setting (``cluster.split=all``, also
    ``+``/``++``/``~`` forms and sweeps ``cluster.key=a,b``) written as today's (``clustering.split=all``); one
    warning line per override rewritten. Every other argument is kept as it is."""
    out = []
    for o in overrides:
        m = _OLD_KEY.match(o)
        if m is None:
            out.append(o)
            continue
        old, new = f"{OLD_SECTION}.{m['name']}", f"{SECTION}.{m['name']}"
        log.warning("%s is now %s: read %r as %r", old, new, o, f"{m['op']}{new}{m['rest'] or ''}")
        out.append(f"{m['op']}{new}{m['rest'] or ''}")
    return out


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved-and-checked config for ``overrides`` (``key=value``, ``group=option``, ``+key=value``; the
    older ``cluster.<setting>`` spelling is rewritten by :func:`rename_old_keys`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = rename_old_keys(overrides)
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
    """Resolve every interpolation now, so a bad value is reported before any work starts; refuse a config tree
    without the clustering stage's settings under ``clustering`` (an older ``config.yaml``)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:
        raise SSLClusterError(f"bad config: {hydra_error_line(e)}") from None
    section = cfg.get(SECTION)
    missing = [f"{SECTION}.{k}" for k in STAGE_SETTINGS if section is None or k not in section]
    if missing:
        raise SSLClusterError(f"bad config: {', '.join(missing)} missing; the clustering stage's settings belong in "
                              f"a {SECTION}: block of the root config.yaml (older trees had them in a "
                              f"{OLD_SECTION}: block), which the {SECTION} group's options must not replace")


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
