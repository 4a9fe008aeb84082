"""Building objects from config nodes: the one place a ``_target_`` node becomes a Python object.

Every package may use it (it imports nothing of sslcluster but :mod:`sslcluster.errors`); the factories of a
package's own objects (:func:`sslcluster.ssl.factory.build_method`, the sources of
:func:`sslcluster.stages.common.build_source`) are written on top of :func:`build`.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sslcluster.errors import SSLClusterError


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` node with plain Python containers; the constructor's own error in one line."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except SSLClusterError:
        raise
    except Exception as e:  # hydra wraps the constructor's error; surface the innermost one
        cause: BaseException = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SSLClusterError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        raise SSLClusterError(f"cannot build {target}: {cause}") from None


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved Python containers (for JSON files and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
