"""The run directory on disk: atomic file writes, run folders, embeddings sets and clusterings. Every other
package reads and writes runs through this one; it imports nothing of sslcluster but :mod:`sslcluster.errors`."""
