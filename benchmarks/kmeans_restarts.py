"""k-means restarts on real embeddings (not planted blobs): NMI of the project's KMeans over 10 seeds for n_init 1, 3
and 10, on the L2-normalised test-split embeddings of finished runs.

    python benchmarks/kmeans_restarts.py runs/<key> [runs/<key> ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sslcluster.clustering.kmeans import KMeans  # noqa: E402
from sslcluster.store.embeddings import read_embeddings  # noqa: E402


def main(runs: list[str]) -> None:
    for run in runs:
        for folder in sorted(Path(run, "embeddings").glob("*test")):
            es = read_embeddings(folder, with_labels=True)
            x = np.array(es.array, dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            y = np.asarray(es.index.labels)
            k = int(y.max()) + 1
            out = []
            for n_init in (1, 3, 10):
                t = time.perf_counter()
                s = [normalized_mutual_info_score(y, KMeans(k=k, n_init=n_init, seed=seed).fit_predict(x))
                     for seed in range(10)]
                out.append(f"n_init={n_init}: mean {np.mean(s):.3f} min {np.min(s):.3f} "
                           f"({(time.perf_counter() - t) / 10:.2f} s)")
            print(f"{Path(run).name} {folder.name} {x.shape}: " + " | ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
