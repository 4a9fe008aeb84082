"""Old import path, kept for old configs: runs made before k-means on Dask moved to
:mod:`sslcluster.clustering.kmeans` name ``sslcluster.clustering.dask_kmeans.DaskKMeans`` as ``_target_``. Nothing
is defined here."""

from __future__ import annotations

from sslcluster.clustering.kmeans import EXTRA, DaskKMeans

__all__ = ["EXTRA", "DaskKMeans"]
