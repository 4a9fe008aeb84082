"""Pages of results: HTML readable offline from the file system (no server, no script), and the commands that
print and write the pages of several runs:

- :mod:`.html`: escaping and the page shell (inline style, a Content-Security-Policy that runs no script);
- :mod:`.gallery`: small thumbnails, made once, of the members nearest each cluster's centroid;
- :mod:`.run_page`: ``runs/<key>/report.html`` (metrics, per clustering pictures and galleries, config, times);
- :mod:`.compare_page`: ``sslcluster compare``: its table, CSVs, bar plot and ``compare.html``;
- :mod:`.runs_listing`: ``sslcluster runs``: the runs of a root, or one run in detail.

The runs themselves are read and grouped by :mod:`sslcluster.tracking` (``compare``, ``records``).
"""
