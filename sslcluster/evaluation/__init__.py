"""Evaluation against held-out labels: cluster metrics, kNN and linear-probe accuracy, pictures."""
