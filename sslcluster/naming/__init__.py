"""Naming clusters with a vision LLM: ``clusters/<key>/names.json`` beside ``labels.npy``.

For each cluster a few images (nearest the centroid plus random members) are sent in one chat-completion request,
through the ``openai`` client (OpenAI or any OpenAI-compatible server), asking for a 1-3 word name and a
one-sentence description as JSON. Modules: :mod:`.select` (which images), :mod:`.images` (data URLs),
:mod:`.prompt` (request and answer validation), :mod:`.client` (key, retries, cap), :mod:`.cache` (answers on
disk), :mod:`.names` (reading ``names.json``). The stage that uses them (one clustering in, ``names.json`` out) is
:mod:`sslcluster.stages.naming`. Config: ``configs/naming/``; CLI: ``sslcluster name run.key=KEY``.

``names.json`` (schema 1; written once per naming run, atomically; ``record.json`` and ``labels.npy`` are never
touched)::

    {
      "schema": 1,
      "cluster_key": "kmeans-test",
      "status": "complete" | "partial",      # partial: at least one cluster has no name (see its "error")
      "model": "gpt-4o", "base_url": null, "prompt": "...",
      "labels_sha256": "...",                 # sha256 of the labels.npy file these names were made for
      "ids_sha256": "...",                    # as in record.json
      "noise": "skip" | "label",
      "n_clusters": 10, "n_named": 9, "n_failed": 1, "requests_sent": 11, "seconds": 4.2,
      "created": "2026-01-01T12:00:00",
      "clusters": {
        "<cluster id>": {                     # the label in labels.npy, as a string ("-1": noise, with "label")
          "name": "Looped digits" | null,     # unique within the file (case-insensitive); null when it failed
          "description": "One sentence." | null,
          "images": [{"row": 12, "id": "...", "path": "...", "pick": "nearest" | "random", "mime": "image/png"}],
          "size": 37,                         # members in the cluster
          "source": "llm" | "cache" | "noise" | null,
          "error": null | "HTTP 500 (gave up after 5 attempts)",
          "renamed_from": "Loops"             # only when the name was changed to tell a duplicate apart
        }
      }
    }

Readers (pictures, W&B) should use :func:`read_names`, which returns ``{cluster id: entry}`` for the named
clusters and nothing when the file was made for other labels.
"""

from sslcluster.naming.names import NAMES, read_names

__all__ = ["NAMES", "read_names"]
