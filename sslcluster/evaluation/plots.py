"""Pictures of a clustering, as PNG files (matplotlib, Agg backend: no display needed).

- :func:`scatter_2d`: a 2-D projection (UMAP, PCA or t-SNE) coloured by cluster and, beside it, by held-out label.
- :func:`sample_grid`: a row of sample images per cluster.
- :func:`k_selection_curves`: the elbow (WCSS) and silhouette (and BIC) curves of a k sweep, chosen k marked.
- :func:`confusion_matrix`: cluster-vs-class counts, clusters ordered by the class they map to.
- :func:`som_maps`: a SOM's U-matrix with every sample's winning node marked by its held-out label, and the hit
  map with per-node counts.

Held-out labels reach these functions only from the evaluation stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sslcluster.clustering.som import u_matrix  # noqa: E402
from sslcluster.errors import SSLClusterError  # noqa: E402
from sslcluster.evaluation.metrics import cluster_to_class, contingency  # noqa: E402
from sslcluster.store.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

PROJECTIONS = ("umap", "pca", "tsne")
MARKERS = "o^sDvP*Xh<>p"


def save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` rows (all when ``n`` is small enough)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def project_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) float32 by ``umap`` (McInnes et al. 2018), ``pca`` or ``tsne`` (van der Maaten & Hinton
    2008). High-dimensional inputs go through PCA to 50 dimensions first for t-SNE, as is usual."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if method not in PROJECTIONS:
        raise SSLClusterError(f"evaluate.plots.projections: {method!r} is not one of {', '.join(PROJECTIONS)}")
    if n < 3:
        raise SSLClusterError(f"a 2-D {method} projection needs at least 3 points, got {n}")
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if x.shape[1] > 50 and n > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                    random_state=seed).fit_transform(x).astype(np.float32)
    from sslcluster.progress import umap_fit_transform

    xy = umap_fit_transform(x, "2-D projection", n_components=2, n_neighbors=min(15, n - 1), min_dist=0.1,
                            random_state=seed).astype(np.float32)
    return xy


def _colours(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "turbo")
    return [cmap(i % cmap.N) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]


def _scatter_panel(ax: plt.Axes, xy: np.ndarray, groups: np.ndarray, names: Callable[[int], str],
                   title: str, noise_name: str, colours: Mapping[int, Any] | None = None,
                   markers: Mapping[int, str] | None = None) -> None:
    """One panel: a point set per group id (>= 0; negative ids are noise / unknown, light grey dots).
    ``colours`` / ``markers`` fix a group's colour and marker (default: a palette colour each, discs)."""
    ids = [g for g in np.unique(groups) if g >= 0]
    if colours is None:
        colours = dict(zip(ids, _colours(len(ids))))
    size = max(2.0, min(20.0, 6000.0 / max(len(xy), 1)))
    if (groups < 0).any():
        m = groups < 0
        ax.scatter(xy[m, 0], xy[m, 1], s=size, c="lightgrey", marker=".", linewidths=0, label=noise_name)
    for g in ids:
        m = groups == g
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colours.get(int(g), "dimgrey"),
                   marker=(markers or {}).get(int(g), "o"), linewidths=0, label=names(int(g)))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(ids) <= 30:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2.0, frameon=False,
                  ncol=1 if len(ids) <= 15 else 2)


def matched_classes(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[int, int]:
    """Cluster -> class for colouring: the one-to-one Hungarian match (as the accuracy uses), and for clusters it
    leaves unmatched (more clusters than classes) their majority class. Unlabelled points (-1) are ignored."""
    known = labels_true >= 0
    if not known.any():
        return {}
    t, p = labels_true[known], labels_pred[known]
    out = cluster_to_class(t, p, "majority")
    out.update(cluster_to_class(t, p, "hungarian"))
    return out


def class_styles(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[dict[int, Any], dict[int, Any],
                                                                               dict[int, str], dict[int, int]]:
    """Colours that make the two scatter panels comparable at a glance: each class its own colour, each cluster
    the colour of its matched class (:func:`matched_classes`); clusters sharing a class differ by marker, clusters
    without labelled members are dark grey. Returns (class colours, cluster colours, cluster markers, match)."""
    classes = [int(k) for k in np.unique(labels_true) if k >= 0]
    palette = _colours(len(classes))
    class_colour = {k: palette[i] for i, k in enumerate(classes)}
    match = matched_classes(labels_true, labels_pred)
    cluster_colour: dict[int, Any] = {}
    cluster_marker: dict[int, str] = {}
    seen: dict[int, int] = {}
    sizes = {int(c): int((labels_pred == c).sum()) for c in np.unique(labels_pred) if c >= 0}
    for c in sorted(sizes, key=lambda c: -sizes[c]):  # the largest cluster of a class keeps the disc
        k = match.get(c)
        cluster_colour[c] = class_colour.get(k, "dimgrey") if k is not None else "dimgrey"
        n = seen.get(k if k is not None else -1, 0)
        seen[k if k is not None else -1] = n + 1
        cluster_marker[c] = MARKERS[n % len(MARKERS)]
    return class_colour, cluster_colour, cluster_marker, match


def cluster_label(c: int, cluster_names: Mapping[int, str] | None) -> str:
    """``cluster 3`` or, when the cluster was named (``names.json``), ``3: tabby cats``."""
    name = (cluster_names or {}).get(int(c))
    return f"{c}: {name}" if name else f"cluster {c}"


def scatter_2d(xy: np.ndarray, labels_pred: np.ndarray, labels_true: np.ndarray | None, path: str | Path,
               method: str, class_names: Sequence[str] | None = None, title: str = "",
               cluster_names: Mapping[int, str] | None = None) -> Path:
    """``xy`` (N, 2), ``labels_pred`` (N,) (-1 noise), ``labels_true`` (N,) (-1 unknown) or None;
    ``cluster_names`` (cluster id -> name) label the legend where given. With labels, each cluster takes the
    colour of the class it is matched to (:func:`class_styles`), so the two panels compare at a glance."""
    panels = 2 if labels_true is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 5.5), squeeze=False, layout="constrained")

    def cname(k: int) -> str:
        return class_names[k] if class_names and 0 <= k < len(class_names) else f"class {k}"

    if labels_true is not None and (labels_true >= 0).any():
        class_colour, colour, marker, match = class_styles(labels_true, labels_pred)

        def legend(c: int) -> str:
            return cluster_label(c, cluster_names) + (f" → {cname(match[c])}" if c in match else "")

        _scatter_panel(axes[0, 0], xy, labels_pred, legend, f"{method.upper()}: by cluster (colour: matched class)",
                       "noise", colour, marker)
    else:
        class_colour = None
        _scatter_panel(axes[0, 0], xy, labels_pred, lambda c: cluster_label(c, cluster_names),
                       f"{method.upper()}: by cluster", "noise")
    if labels_true is not None:
        _scatter_panel(axes[0, 1], xy, labels_true, cname, f"{method.upper()}: by held-out label", "unknown",
                       class_colour)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _as_rgb(img: Any, size: int) -> np.ndarray:
    from PIL import Image

    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS if img.width > size else Image.Resampling.NEAREST)
    if img.width < size and img.height < size:  # small images (digits) up-sampled so they are visible
        scale = size / max(img.width, img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


def sample_grid(paths: Sequence[str], labels_pred: np.ndarray, path: str | Path,
                load: Callable[[str], Any], per_cluster: int = 8, max_clusters: int = 50, size: int = 64,
                seed: int = 0, cluster_names: Mapping[int, str] | None = None) -> Path:
    """One row per cluster (largest first, at most ``max_clusters``, noise last): ``per_cluster`` random members.
    ``load(path) -> PIL.Image``; an image that cannot be loaded is drawn as a grey tile."""
    ids, counts = np.unique(labels_pred, return_counts=True)
    order = [i for _, i in sorted(zip(-counts, ids)) if i >= 0][:max_clusters]
    if (labels_pred < 0).any():
        order.append(-1)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(order), 1, figsize=(per_cluster * 0.9 + 1.2, 0.95 * len(order) + 0.3),
                             squeeze=False)
    missing = 0
    for ax, c in zip(axes[:, 0], order):
        members = np.flatnonzero(labels_pred == c)
        pick = rng.choice(members, min(per_cluster, len(members)), replace=False)
        tiles = []
        for i in pick:
            try:
                tiles.append(_as_rgb(load(paths[i]), size))
            except (SSLClusterError, OSError, ValueError):
                missing += 1
                tiles.append(np.full((size, size, 3), 200, dtype=np.uint8))
        tiles += [np.full((size, size, 3), 255, dtype=np.uint8)] * (per_cluster - len(tiles))
        ax.imshow(np.concatenate(tiles, axis=1))
        ax.set_xticks([])
        ax.set_yticks([])
        head = "noise" if c < 0 else cluster_label(c, cluster_names).removeprefix("cluster ")
        ax.set_ylabel(f"{head}\n(n={len(members)})", rotation=0, ha="right", va="center", fontsize=8)
    if missing:
        log.warning("sample grid: %d images could not be loaded (drawn grey)", missing)
    return save(fig, path)


def k_selection_curves(result: dict[str, Any], path: str | Path) -> Path:
    """The curves of :func:`sslcluster.clustering.select_k.sweep_k`: WCSS (elbow), silhouette, and BIC when
    present, each against k, the chosen k marked."""
    ks = result["ks"]
    names = [("wcss", "WCSS (elbow)"), ("silhouette", "mean silhouette")] + (
        [("bic", "BIC")] if "bic" in result else [])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False,
                             layout="constrained")
    for ax, (key, label) in zip(axes[0], names):
        ax.plot(ks, result[key], "o-", ms=3)
        ax.axvline(result["chosen_k"], color="tab:red", ls="--", lw=1)
        ax.set_xlabel("k")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"k selection by {result['method']}: k = {result['chosen_k']}")
    return save(fig, path)


def training_curve(curve: Sequence[dict[str, float]], path: str | Path, title: str = "training curve") -> Path:
    """A trained clustering's loss terms per epoch (``curve.csv`` of the learned heads): one panel per term."""
    terms = [k for k in dict.fromkeys(k for row in curve for k in row) if k not in ("epoch", "selected_head")]
    fig, axes = plt.subplots(1, max(1, len(terms)), figsize=(4.0 * max(1, len(terms)), 3.2), squeeze=False,
                             layout="constrained")
    for ax, term in zip(axes[0], terms):
        rows = [r for r in curve if term in r and r[term] != ""]
        ax.plot([r["epoch"] for r in rows], [float(r[term]) for r in rows], "-", lw=1.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(term)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save(fig, path)


def confusion_matrix(labels_true: np.ndarray, labels_pred: np.ndarray, path: str | Path,
                     class_names: Sequence[str] | None = None, max_clusters: int = 60) -> Path:
    """Counts (clusters x classes) of the labelled points; clusters sorted by the class of their majority mapping,
    noise as the last row. Above ``max_clusters`` clusters only the largest are drawn."""
    known = labels_true >= 0
    t, p = labels_true[known], labels_pred[known]
    if len(t) == 0:
        raise SSLClusterError("no held-out labels: no confusion matrix to draw")
    table, clusters, classes = contingency(t, p)
    mapping = cluster_to_class(t, p, "majority")
    sizes = table.sum(axis=1)
    rows = [i for i in range(len(clusters)) if clusters[i] >= 0]
    rows = sorted(sorted(rows, key=lambda i: -sizes[i])[:max_clusters],
                  key=lambda i: (mapping.get(int(clusters[i]), 1 << 30), -sizes[i]))
    rows += [i for i in range(len(clusters)) if clusters[i] < 0]
    table = table[rows]
    nr, nc = table.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * nc + 2.5), max(3.0, 0.3 * nr + 1.5)))
    frac = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    ax.imshow(frac, cmap="Blues", aspect="auto", vmin=0, vmax=1)
    if nr * nc <= 900:
        for i in range(nr):
            for j in range(nc):
                if table[i, j]:
                    ax.text(j, i, str(table[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if frac[i, j] > 0.6 else "black")
    cnames = [class_names[k] if class_names and 0 <= k < len(class_names) else str(k) for k in classes]
    ax.set_xticks(range(nc), cnames, rotation=60 if max(map(len, cnames)) > 3 else 0, fontsize=7)
    ax.set_yticks(range(nr), ["noise" if clusters[i] < 0 else str(clusters[i]) for i in rows], fontsize=7)
    ax.set_xlabel("held-out class")
    ax.set_ylabel("cluster")
    ax.set_title("cluster vs class (colour: fraction of the cluster)")
    return save(fig, path)


def som_maps(weights: np.ndarray, bmu: np.ndarray, labels_true: np.ndarray | None, folder: str | Path,
             class_names: Sequence[str] | None = None, max_marks: int = 5000, seed: int = 0) -> list[Path]:
    """``weights`` (X, Y, D) of a SOM and each sample's winning node ``bmu`` (N,) (index ``row * Y + col``) ->
    ``som_umatrix.png`` (distance map, samples' winning nodes marked per held-out class, jittered) and
    ``som_hits.png`` (samples per node)."""
    folder = Path(folder)
    gx, gy, _ = weights.shape
    um = u_matrix(weights)
    rows, cols = np.divmod(bmu, gy)
    fig, ax = plt.subplots(figsize=(0.55 * gy + 3.0, 0.55 * gx + 1.2))
    im = ax.imshow(um, cmap="bone_r", origin="upper")
    fig.colorbar(im, ax=ax, label="mean distance to neighbours")
    if labels_true is not None:
        sel = subsample(len(bmu), max_marks, seed)
        rng = np.random.default_rng(seed)
        jitter = rng.uniform(-0.3, 0.3, (len(sel), 2))
        classes = [k for k in np.unique(labels_true[sel]) if k >= 0]
        cols_ = _colours(len(classes))
        for k, c in zip(classes, cols_):
            m = labels_true[sel] == k
            name = class_names[k] if class_names and 0 <= k < len(class_names) else f"class {k}"
            ax.scatter(cols[sel][m] + jitter[m, 1], rows[sel][m] + jitter[m, 0], s=9, color=c,
                       marker=MARKERS[int(k) % len(MARKERS)], linewidths=0, alpha=0.8, label=name)
        ax.legend(loc="center left", bbox_to_anchor=(1.25, 0.5), fontsize=7, frameon=False, markerscale=1.5)
    ax.set_title("SOM U-matrix, samples' winning nodes by held-out label")
    ax.set_xticks(range(gy))
    ax.set_yticks(range(gx))
    out = [save(fig, folder / "som_umatrix.png")]
    hits = np.bincount(bmu, minlength=gx * gy).reshape(gx, gy)
    fig, ax = plt.subplots(figsize=(0.55 * gy + 2.5, 0.55 * gx + 1.0))
    im = ax.imshow(hits, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label="samples")
    if gx * gy <= 900:
        for i in range(gx):
            for j in range(gy):
                ax.text(j, i, str(hits[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if hits[i, j] < hits.max() * 0.6 else "black")
    ax.set_title("SOM hit map (samples per node)")
    ax.set_xticks(range(gy))
    ax.set_yticks(range(gx))
    out.append(save(fig, folder / "som_hits.png"))
    return out


def artifact_pictures(artifacts: Mapping[str, np.ndarray], labels_pred: np.ndarray, labels_true: np.ndarray | None,
                      folder: str | Path, class_names: Sequence[str] | None = None, seed: int = 0) -> list[Path]:
    """Pictures of the arrays a clustering algorithm declared (:meth:`ClusteringAlgorithm.artifacts`): a SOM's
    ``som_weights`` (X, Y, D) and ``som_bmu`` (N,) give :func:`som_maps`; other arrays have no picture."""
    if "som_weights" not in artifacts:
        return []
    bmu = artifacts.get("som_bmu")
    if bmu is None or len(bmu) != len(labels_pred):
        n = "no" if bmu is None else len(bmu)
        raise SSLClusterError(f"som_bmu has {n} rows for {len(labels_pred)} labels")
    return som_maps(artifacts["som_weights"], bmu, labels_true, folder, class_names, seed=seed)
