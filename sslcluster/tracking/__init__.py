"""Run directories, run records and atomic file writes."""
