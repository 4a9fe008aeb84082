"""Following experiments: Lightning loggers and W&B, multiruns, and reading run records (the runs of a root, runs
grouped for comparison); the commands that print and write them are in :mod:`sslcluster.report`."""
