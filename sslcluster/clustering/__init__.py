"""Clustering: a preprocessing chain, then one algorithm behind a small interface (``fit_predict``).

``base`` holds the interface and the seeded row order, ``checks`` the checks every algorithm module shares; the
algorithms live one family per module (``kmeans``, ``density``, ``mixture``, ``hierarchical``, ``spectral``,
``som``, ``heads``); ``preprocess`` and ``select_k`` are the preprocessing chain and k selection. ``algorithms``,
``optics`` and ``dask_kmeans`` only keep the paths older configs name (see ``docs/adding-a-clustering.md``).
"""
