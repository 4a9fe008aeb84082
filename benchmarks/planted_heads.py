"""The learned heads on planted data whose classes neighbours carry but centroids do not: two interleaved half-moons
(scikit-learn's ``make_moons``, standardised) lifted linearly into 32 dimensions. The heads read the lifted points;
neighbours are mined (cosine, as SCAN does) on the same points moved far from the origin along an orthogonal
direction, so that the cosine neighbours are the Euclidean ones of the moons (their label agreement is printed).
Printed: k-means' NMI, and for SCAN (linear and MLP heads) and TEMI every head's NMI and selection loss, and the
NMI of the head each selects (by its loss, never by labels); for SCAN also the selection loss of the true partition
(one-hot at 0.998): below every head's, the heads stopped in local minima of the SCAN loss, not at its minimum.

    python benchmarks/planted_heads.py                 # 1,000 points, 50 epochs
    python benchmarks/planted_heads.py --epochs 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from _common import machine  # noqa: E402  (also puts the repository on sys.path)


def moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 32) lifted moons, (N, 32) the mining features (the same, far from the origin), labels (N,)."""
    from sklearn.datasets import make_moons

    x2, y = make_moons(n, noise=0.05, random_state=seed)
    x2 = (x2 - x2.mean(0)) / x2.std(0)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    x = x2 @ q[:2] + 0.01 * rng.standard_normal((n, 32))
    return x.astype(np.float32), (x + 6.0 * q[2]).astype(np.float32), y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--heads", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from sslcluster.clustering.kmeans import KMeans
    from sslcluster.clustering.heads.common import mine_neighbours
    from sslcluster.clustering.heads.scan import SCANHeads
    from sslcluster.clustering.heads.temi import TEMIHeads

    x, mine, y = moons(args.n, args.seed)
    nb = mine_neighbours(mine, 20)
    out: dict = {"machine": machine(), "n": args.n, "epochs": args.epochs,
                 "neighbour_agreement": float((y[nb[:, 1:]] == y[:, None]).mean()),
                 "kmeans_nmi": float(nmi(y, KMeans(k=2, seed=args.seed).fit_predict(x)))}
    common = dict(k=2, num_heads=args.heads, num_neighbors=20, epochs=args.epochs, device="cpu", seed=args.seed)
    variants = {
        "scan_linear_sgd5": SCANHeads(**common, head="linear"),
        "scan_mlp_sgd5": SCANHeads(**common, head="mlp"),
        "scan_mlp_adam1e-3": SCANHeads(**common, head="mlp", optimizer="adam", lr=1e-3, batch_size=128),
        "temi_dino": TEMIHeads(**common, batch_size=256, warmup_epochs=5, lr=1e-3, min_lr=1e-3),
    }
    for name, algo in variants.items():
        algo.fit_rows(x, None, mine)
        probs = algo._probs(x, lambda b: b, torch.device("cpu"))
        per_head = [round(float(nmi(y, probs[h].argmax(-1).numpy())), 3) for h in range(probs.shape[0])]
        out[name] = {"selected_nmi": per_head[algo.best_head or 0], "per_head_nmi": per_head,
                     "selection_losses": [round(v, 4) for v in algo.selection_losses or []]}
        if isinstance(algo, SCANHeads):
            truth = torch.nn.functional.one_hot(torch.from_numpy(y).long(), 2).float() * 0.998 + 0.001
            out[name]["truth_selection_loss"] = round(float(algo.head_losses(truth[None], nb)[0]), 4)
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
