"""sslcluster: learn image representations without labels, cluster them, and evaluate the clusters.

Stages (each reads and writes the run directory, see ``sslcluster.store.rundir``):
pretrain -> export -> cluster -> evaluate -> (name) -> report.
"""

__version__ = "0.1.0"
