"""Learned clustering heads (SCAN, TEMI) trained on frozen embeddings, and their losses."""
