"""runs/<key>/report.html: content, escaping of outside text, thumbnails made once, and (when Chromium is there) a
real headless browser: every image loads, no console error, planted hostile text shows as text, nothing runs."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from sslcluster.cli import main
from sslcluster.config import compose
from sslcluster.naming.select import select_images
from sslcluster.pipeline import stage_cluster, stage_evaluate
from sslcluster.report.gallery import thumb_name
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.io import file_sha256, write_json
from sslcluster.store.rundir import RunDir
from tests.browser import find_chromium, visit

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_DESC = 'He said "hi" & left <img src=x onerror=alert(2)> \'quoted\''
HOSTILE_FILE = 'we"ird <file> name 1.png'
HOSTILE_CLASS = "cat & <dog>"
PER_CLUSTER = 5


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html)
    return p.tags


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run of 2 planted clusters of real image files (one named with quotes, < and spaces), clustered,
    evaluated with pictures and per-cluster folders, then named with hostile text and reported again."""
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    n_per, paths, labels = 24, [], []
    for c, folder in enumerate((HOSTILE_CLASS, "plain")):
        d = tmp / "images" / folder
        d.mkdir(parents=True)
        for i in range(n_per):
            name = HOSTILE_FILE if (c, i) == (0, 0) else f"img {i}.png"
            colour = (200, 40 + 5 * i, 40) if c == 0 else (40, 40 + 5 * i, 200)
            Image.new("RGB", (20, 20), colour).save(d / name)
            paths.append(str(d / name))
            labels.append(c)
    y = np.asarray(labels)
    x = (np.eye(6)[y] * 5 + rng.standard_normal((len(y), 6))).astype(np.float32)
    root = tmp / "runs"
    run = RunDir.create(root, "r")
    index = EmbeddingIndex([Path(p).name for p in paths], paths, y.astype(np.int64), [HOSTILE_CLASS, "plain"])
    write_embeddings(run.embeddings_dir("test"), x, index, features="test")
    run.release()
    base = [f"run.root={root}", "run.key=r", "logger=none", "evaluate.linear_probe=false",
            "evaluate.plots.enabled=true", "evaluate.plots.projections=[pca]", "evaluate.plots.images_per_cluster=3",
            f"report.images_per_cluster={PER_CLUSTER}", "evaluate.folders=copy"]
    stage_cluster(compose(base + ["clustering.algorithm.k=2", "clustering.algorithm.n_init=2"]))
    stage_evaluate(compose(base))
    cdir = run.path / "clusters" / "kmeans-test"
    first_thumbs = {p.name: p.stat().st_mtime_ns for p in (run.path / "report" / "thumbs").iterdir()}
    write_json(cdir / "names.json", {
        "schema": 1, "cluster_key": "kmeans-test", "status": "complete",
        "labels_sha256": file_sha256(cdir / "labels.npy"),
        "clusters": {"0": {"name": HOSTILE_NAME, "description": HOSTILE_DESC},
                     "1": {"name": "Blue & <b>bold</b>", "description": "plain text"}}})
    assert main(["report", *base]) == 0
    return run.path, x, base, first_thumbs


def test_report_holds_metrics_pictures_galleries_config_and_times(hostile_run):
    run, x, _, _ = hostile_run
    html = (run / "report.html").read_text()
    # metrics table with definitions one click away
    for key in ("nmi", "ari", "acc"):
        assert f'href="#def-{key}"' in html and f'id="def-{key}"' in html
    # pictures of the clustering, linked relative to the run directory
    srcs = [a["src"] for t, a in tags(html) if t == "img"]
    assert "clusters/kmeans-test/plots/scatter_pca.png" in srcs
    assert "clusters/kmeans-test/plots/confusion.png" in srcs
    for s in srcs:
        assert not s.startswith(("/", "file:", "http")), s
        assert (run / unquote(s)).is_file(), s
    # a gallery per cluster: size, majority label, purity, bounded thumbnails and the count of the rest
    labels = np.load(run / "clusters" / "kmeans-test" / "labels.npy")
    for c in (0, 1):
        size = int((labels == c).sum())
        assert f'id="c{c}"' in html and f"{size} images" in html
        assert f"and {size - PER_CLUSTER} more" in html
    assert "purity 1.00" in html and "majority label cat &amp; &lt;dog&gt;" in html
    assert 'href="clusters/kmeans-test/folders/cluster_0/"' in html
    # config and stage times at the end
    assert html.index('id="config"') > html.index('id="c1"')
    assert "split: test" in html and 'id="times"' in html  # the config as YAML (here: the stages' configs)


def test_gallery_shows_members_nearest_the_centroid_first(hostile_run):
    run, x, _, _ = hostile_run
    html = (run / "report.html").read_text()
    labels = np.load(run / "clusters" / "kmeans-test" / "labels.npy")
    from sslcluster.store.embeddings import read_index

    index = read_index(run / "embeddings" / "test")
    card = html[html.index('id="c0"'):html.index('id="c1"')] if html.index('id="c0"') < html.index('id="c1"') \
        else html[html.index('id="c0"'):]
    shown = [a["src"] for t, a in tags(card) if t == "img"]
    rows = [p.row for p in select_images(x, labels, 0, PER_CLUSTER, PER_CLUSTER, seed=0, l2=True)]
    assert shown == [f"report/thumbs/{thumb_name(index.paths[r])}" for r in rows]
    # and the order is by distance to the centroid (L2-normalised, as k-means saw them)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    members = np.flatnonzero(labels == 0)
    d = ((xn[members] - xn[members].mean(0)) ** 2).sum(1)
    assert rows == members[np.argsort(d, kind="stable")[:PER_CLUSTER]].tolist()


def test_outside_text_is_escaped_and_no_script_is_shipped(hostile_run):
    run, _, _, _ = hostile_run
    html = (run / "report.html").read_text()
    assert "<script" not in html.lower()
    assert not any(t == "script" for t, _ in tags(html))
    assert all(not k.startswith("on") for _, a in tags(html) for k in a), "an event-handler attribute"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "He said &quot;hi&quot; &amp; left &lt;img src=x onerror=alert(2)&gt; &#x27;quoted&#x27;" in html
    # the file name with a quote, < and spaces survives as one attribute value
    alts = [a.get("alt") for t, a in tags(html) if t == "img"]
    assert any(a and a.startswith(HOSTILE_FILE + " (") for a in alts)
    csp = [a for t, a in tags(html) if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"] and "script-src" not in csp[0]["content"]


def test_thumbnails_are_made_once(hostile_run):
    run, _, base, first = hostile_run
    now = {p.name: p.stat().st_mtime_ns for p in (run / "report" / "thumbs").iterdir()}
    assert first and now == first  # the second report reused every thumbnail
    assert all(p.stat().st_size < 4096 for p in (run / "report" / "thumbs").iterdir())


def test_report_command_needs_an_existing_run(tmp_path, capsys):
    assert main(["report", f"run.root={tmp_path}", "run.key=nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_report_in_a_real_browser(hostile_run, tmp_path):
    exe, why = find_chromium()
    if exe is None:
        pytest.skip(why)
    run, _, _, _ = hostile_run
    shots = Path(os.environ.get("SSLCLUSTER_SCREENSHOTS", tmp_path))
    seen = visit(run / "report.html", screenshot=shots / "report_hostile.png", evaluate={
        "scripts": "document.scripts.length",
        "text": "document.body.innerText",
        "title0": "document.querySelector('#c0 h4').textContent",
        "alts": "Array.from(document.images).map(i => i.alt)",
    })
    assert seen.images and all(i["complete"] and i["naturalWidth"] > 0 for i in seen.images), \
        [i for i in seen.images if not i["naturalWidth"]]
    assert seen.errors == [], seen.errors
    assert seen.dialogs == [] and seen.evaluations["scripts"] == 0  # nothing ran, no script element exists
    assert seen.evaluations["title0"] in (f"cluster 0: {HOSTILE_NAME}",)
    assert HOSTILE_DESC in seen.evaluations["text"]
    assert HOSTILE_CLASS in seen.evaluations["text"]
    assert any(HOSTILE_FILE in a for a in seen.evaluations["alts"])
    png = shots / "report_hostile.png"
    with Image.open(png) as im:
        assert im.size[0] == 1280 and im.size[1] > 900
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50  # not blank
