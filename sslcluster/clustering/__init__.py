"""Clustering: a preprocessing chain, then one algorithm behind a small interface (``fit_predict``)."""
