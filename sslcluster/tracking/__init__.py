"""Following experiments: Lightning loggers and W&B, listing runs, comparing runs and multiruns."""
