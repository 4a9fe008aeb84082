"""The per-cluster galleries of the report: which members are shown (nearest the centroid first, a bounded
number) and their thumbnails, small JPEG files made once under ``<run>/report/thumbs/`` and reused by every later
report of the run (a thumbnail's name is a digest of its image path, so clusterings of the same images share it).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sslcluster.errors import SSLClusterError
from sslcluster.naming.select import select_images
from sslcluster.store.io import atomic_path

log = logging.getLogger(__name__)

THUMBS = Path("report") / "thumbs"


@dataclass
class Member:
    """One shown member: its row in ``index.csv``, its id and path as the index has them, its thumbnail (relative
    to the run directory; None when the image could not be read)."""

    row: int
    id: str
    path: str
    thumb: str | None


@dataclass
class ClusterCard:
    """What the gallery shows of one cluster."""

    cluster: int
    size: int
    name: str | None = None
    description: str | None = None
    majority_label: str | None = None
    purity: float | None = None
    matched_class: str | None = None
    members: list[Member] = field(default_factory=list)
    folder: str | None = None  # relative link to clusters/<key>/folders/cluster_<id>/ when made

    @property
    def more(self) -> int:
        """Members not shown."""
        return self.size - len(self.members)


def thumb_name(image_path: str) -> str:
    """The thumbnail's file name for ``image_path``: a SHA-1 prefix of the path, ``.jpg``."""
    return hashlib.sha1(image_path.encode("utf-8", "surrogatepass")).hexdigest()[:20] + ".jpg"


def make_thumbnail(run_path: Path, image_path: str, load: Callable[[str], Any], size: int = 64) -> str | None:
    """``report/thumbs/<digest>.jpg`` (at most ``size`` pixels a side; small images enlarged without smoothing)
    for ``image_path``, written once (atomically); None when the image cannot be read."""
    from PIL import Image

    rel = THUMBS / thumb_name(image_path)
    dest = run_path / rel
    if dest.is_file():
        return rel.as_posix()
    try:
        img = load(image_path).convert("RGB")
    except (SSLClusterError, OSError, ValueError) as e:
        log.debug("no thumbnail for %s: %s", image_path, e)
        return None
    if max(img.size) > size:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    elif max(img.size) < size:
        scale = size / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.NEAREST)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        img.save(tmp, format="JPEG", quality=85)
    return rel.as_posix()


def cluster_cards(run_path: Path, cluster_dir: Path, record: Mapping[str, Any], labels_pred: np.ndarray,
                  ids: Sequence[str], paths: Sequence[str], labels_true: np.ndarray | None,
                  classes: Sequence[str] | None, names: Mapping[int, Mapping[str, Any]],
                  matched: Mapping[int, int], load: Callable[[str], Any], per_cluster: int = 12,
                  max_clusters: int = 100, seed: int = 0, thumb_size: int = 64) -> tuple[list[ClusterCard], int]:
    """Cards for the ``max_clusters`` largest clusters (noise last) and how many clusters were left out.

    ``labels_pred`` (N,) is the clustering, ``labels_true`` (N,) held-out labels (-1 unknown) or None; ``matched``
    maps a cluster to the class the evaluation matched it to. Members shown: the ``per_cluster`` nearest the
    centroid (embeddings of ``record["embeddings"]``, L2-normalised when the clustering was), nearest first;
    noise shows a seeded random sample."""
    from sslcluster.store.clusters import Clustering

    array = Clustering(cluster_dir).embeddings(dict(record)).read(with_labels=False).array
    l2 = "l2" in (record.get("preprocess") or [])
    cids, counts = np.unique(labels_pred, return_counts=True)
    order = sorted(range(len(cids)), key=lambda i: (cids[i] < 0, -counts[i], cids[i]))
    kept = [i for i in order if cids[i] >= 0][:max_clusters] + [i for i in order if cids[i] < 0]
    left_out = len(order) - len(kept)
    folders = cluster_dir / "folders"
    cards = []

    def cname(k: int) -> str:
        return classes[k] if classes and 0 <= k < len(classes) else str(k)

    for i in kept:
        cid, size = int(cids[i]), int(counts[i])
        card = ClusterCard(cluster=cid, size=size)
        if cid >= 0:
            picks = [p.row for p in select_images(array, labels_pred, cid, min(per_cluster, size),
                                                  min(per_cluster, size), seed, l2)] if per_cluster > 0 else []
        else:
            members = np.flatnonzero(labels_pred == cid)
            rng = np.random.default_rng([abs(int(seed)), 0])
            picks = sorted(rng.choice(members, size=min(per_cluster, size), replace=False).tolist())
        card.members = [Member(int(r), str(ids[r]), str(paths[r]),
                               make_thumbnail(run_path, str(paths[r]), load, thumb_size)) for r in picks]
        if labels_true is not None:
            truth = labels_true[labels_pred == cid]
            known = truth[truth >= 0]
            if len(known):
                label, n = Counter(known.tolist()).most_common(1)[0]
                card.majority_label, card.purity = cname(label), n / len(known)
        if cid in matched:
            card.matched_class = cname(matched[cid])
        info = names.get(cid) or {}
        card.name, card.description = info.get("name"), info.get("description")
        sub = folders / ("noise" if cid < 0 else f"cluster_{cid}")
        if (folders / "manifest.json").is_file() and sub.is_dir():
            card.folder = sub.relative_to(run_path).as_posix() + "/"
        cards.append(card)
    return cards, left_out
