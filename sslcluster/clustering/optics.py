"""Old import path, kept for old configs: runs made before OPTICS moved to :mod:`sslcluster.clustering.density` name
``sslcluster.clustering.optics.OPTICS`` as ``_target_``. Nothing is defined here."""

from __future__ import annotations

from sslcluster.clustering.density import OPTICS

__all__ = ["OPTICS"]
