"""HTML pages of results, readable offline from the file system (no server, no script):

- :mod:`.html`: escaping and the page shell (inline style, a Content-Security-Policy that runs no script);
- :mod:`.gallery`: small thumbnails, made once, of the members nearest each cluster's centroid;
- :mod:`.run_page`: ``runs/<key>/report.html`` (metrics, per clustering pictures and galleries, config, times);
- :mod:`.compare_page`: ``compare.html`` beside ``sslcluster compare``'s table and bar plot.
"""
