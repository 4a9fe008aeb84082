"""Cluster naming through the real ``openai`` client against a local OpenAI-compatible server (127.0.0.1, port 0)
that records every request and answers by a script: names, 429 then success, 500, malformed JSON, a stall."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sslcluster.cli import main
from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.naming import read_names
from sslcluster.naming.client import ClientSettings, NamingClient, NamingError
from sslcluster.naming.images import encode_image
from sslcluster.naming.prompt import AnswerError, build_messages, parse_answer
from sslcluster.naming.select import select_images
from sslcluster.pipeline import run_pipeline, stage_name
from sslcluster.store.embeddings import EmbeddingIndex, write_embeddings
from sslcluster.store.io import write_json, write_npy

KEY = "named"
CKEY = "kmeans-test"


# -- the fake server ---------------------------------------------------------------------------------------------

class FakeLLM:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1. ``script`` is consumed one action per request
    (then ``ok``): ``ok`` (a fresh name), ``same`` (always the name "Same thing"), ``429``, ``500``, ``badjson``
    (a reply that is not JSON), ``badbody`` (an HTTP body that is not JSON), ``stall`` (answers after
    ``stall_s``), ``pair`` (answers once two requests are in flight)."""

    def __init__(self, script: list[str] | None = None, stall_s: float = 3.0) -> None:
        self.script = list(script or [])
        self.stall_s = stall_s
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(fake.summarise(self.path, self.headers, body))
                    action = fake.script.pop(0) if fake.script else "ok"
                    fake.served += 1
                    n = fake.served
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake.answer(self, action, n, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @staticmethod
    def summarise(path: str, headers: Any, body: dict[str, Any]) -> dict[str, Any]:
        (message,) = body["messages"]
        parts = message["content"]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        mimes, sizes = [], []
        for u in urls:
            head, data = u.split(",", 1)
            assert head.startswith("data:") and head.endswith(";base64")
            mimes.append(head[5:-7])
            raw = base64.b64decode(data)
            with Image.open(io.BytesIO(raw)) as im:
                assert Image.MIME[im.format] == head[5:-7]  # the stated MIME type is the real one
                sizes.append(im.size)
        return {"path": path, "auth": headers.get("Authorization"), "model": body["model"], "prompt": texts,
                "n_images": len(urls), "mimes": mimes, "sizes": sizes,
                "images": [hashlib.sha256(u.encode()).hexdigest() for u in urls],
                "response_format": body.get("response_format")}

    def answer(self, h: BaseHTTPRequestHandler, action: str, n: int, body: dict[str, Any]) -> None:
        if action == "stall":
            self.release.wait(self.stall_s)
        if action == "pair":  # hold the answer until a second request is in flight (at most 3 s)
            for _ in range(300):
                if self.max_in_flight >= 2 or self.release.wait(0.01):
                    break
        if action in ("429", "429-wait"):
            return self.send(h, 429, {"error": {"message": "slow down", "type": "rate_limit"}},
                             {"Retry-After": "0" if action == "429" else "120"})
        if action in ("400", "500", "503"):
            return self.send(h, int(action), {"error": {"message": "boom", "type": "server_error"}})
        if action == "badbody":
            return self.send_raw(h, 200, b"{not json", "application/json")
        content = {"ok": json.dumps({"name": f"Shape {n}", "description": f"Images of kind {n}."}),
                   "stall": json.dumps({"name": f"Late {n}", "description": "Too late."}),
                   "pair": json.dumps({"name": f"Pair {n}", "description": "Answered together."}),
                   "same": json.dumps({"name": "Same thing", "description": "Looks alike."}),
                   "badjson": "Sure! These look like digits, {name: maybe"}[action]
        self.send(h, 200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def send(self, h: BaseHTTPRequestHandler, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(h, code, json.dumps(obj).encode(), "application/json", headers)

    @staticmethod
    def send_raw(h: BaseHTTPRequestHandler, code: int, data: bytes, ctype: str,
                 headers: dict[str, str] | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def llm(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake = FakeLLM()
    fake.thread.start()
    yield fake
    fake.release.set()
    fake.server.shutdown()
    fake.server.server_close()


# -- a small clustering to name ----------------------------------------------------------------------------------

def make_clustering(root: Path, k: int = 4, per: int = 6, noise: int = 0, paths: list[str] | None = None,
                    preprocess: tuple[str, ...] = ("l2",)) -> Path:
    """A run ``root/KEY`` with embeddings of ``k`` well-separated groups of digits images (plus ``noise``
    points labelled -1) and a complete clustering ``clusters/CKEY`` laid out as ``stages/cluster.py`` does."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(k, 16)) * 5
    labels = np.concatenate([np.repeat(np.arange(k), per), np.full(noise, -1)]).astype(np.int64)
    x = np.concatenate([centers[labels[: k * per]] + rng.normal(size=(k * per, 16)) * 0.1,
                        rng.normal(size=(noise, 16))]).astype(np.float32)
    n = len(labels)
    ids = [f"img{i:03d}" for i in range(n)]
    paths = paths or [f"sklearn:load_digits[{i}]" for i in range(n)]
    run = root / KEY
    emb = write_embeddings(run / "embeddings" / "test", x, EmbeddingIndex(ids, paths[:n], np.maximum(labels, 0)),
                           features="backbone")
    cdir = run / "clusters" / CKEY
    write_npy(cdir / "labels.npy", labels)
    write_json(cdir / "record.json", {"key": CKEY, "algorithm": "kmeans", "params": {"k": k},
                                      "preprocess": list(preprocess), "embeddings": str(emb.resolve()),
                                      "features": "backbone", "ids_sha256": EmbeddingIndex(ids, paths).ids_sha256(),
                                      "n_points": n, "seed": 0, "status": "complete"})
    return cdir


def naming_cfg(tiny: list[str], llm: FakeLLM | None, *extra: str) -> Any:
    over = [*tiny, f"run.key={KEY}", "naming=llm", "naming.backoff_s=0.01", "naming.concurrency=1",
            "naming.timeout_s=5"]
    if llm is not None:
        over.append(f"naming.base_url={llm.base_url}")
    return compose(over + list(extra))


def snapshot(cdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cdir / "record.json", cdir / "labels.npy")}


def names_doc(cdir: Path) -> dict[str, Any]:
    return json.loads((cdir / "names.json").read_text())


def assert_clean(cdir: Path, before: dict[str, bytes]) -> None:
    """The clustering's own files are untouched and no temporary file is left behind."""
    assert snapshot(cdir) == before
    assert not list(cdir.parent.parent.rglob("*.tmp"))


# -- end to end against the fake server ----------------------------------------------------------------------------

def test_names_are_stored_beside_the_ids(tiny, tmp_path, llm, capsys):
    cdir = make_clustering(tmp_path / "runs", k=4, per=7)
    before = snapshot(cdir)
    stage_name(naming_cfg(tiny, llm, "naming.model=test-vision", "naming.images.max_side=48",
                          "naming.images.min_side=32"))
    reqs = llm.requests
    assert len(reqs) == 4  # one request per cluster
    for r in reqs:
        assert r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sk-test"
        assert r["model"] == "test-vision" and r["n_images"] == 5
        assert r["mimes"] == ["image/png"] * 5
        assert all(max(s) <= 48 and max(s) >= 32 for s in r["sizes"])  # 8x8 digits enlarged, within max side
        assert "1-3 word name" in r["prompt"][0] and "JSON" in r["prompt"][0]
        assert r["response_format"] == {"type": "json_object"}
    doc = names_doc(cdir)
    assert doc["status"] == "complete" and doc["n_named"] == 4 and doc["requests_sent"] == 4
    assert set(doc["clusters"]) == {"0", "1", "2", "3"}
    labels = np.load(cdir / "labels.npy")
    for cid, entry in doc["clusters"].items():
        assert entry["name"].startswith("Shape ") and entry["description"] and entry["error"] is None
        assert entry["source"] == "llm" and entry["size"] == 7
        rows = [im["row"] for im in entry["images"]]
        assert len(rows) == 5 and all(labels[r] == int(cid) for r in rows)
        assert [im["pick"] for im in entry["images"]] == ["nearest"] * 3 + ["random"] * 2
    assert len({e["name"] for e in doc["clusters"].values()}) == 4
    assert read_names(cdir)[2]["name"] == doc["clusters"]["2"]["name"]
    assert_clean(cdir, before)
    assert "cluster 0: Shape" in capsys.readouterr().out


def test_429_is_retried_then_succeeds(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=2)
    llm.script = ["429", "429"]
    stage_name(naming_cfg(tiny, llm))
    doc = names_doc(cdir)
    assert len(llm.requests) == 4  # two refused, then one per cluster
    assert llm.requests[0]["images"] == llm.requests[2]["images"]  # the same cluster asked again
    assert doc["status"] == "complete" and doc["requests_sent"] == 4
    assert all(e["name"] and e["error"] is None for e in doc["clusters"].values())


def test_500_gives_a_per_cluster_error_and_the_rest_are_named(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    before = snapshot(cdir)
    llm.script = ["ok", "500", "500"]
    stage_name(naming_cfg(tiny, llm, "naming.retries=1"))
    doc = names_doc(cdir)
    c = doc["clusters"]
    assert c["0"]["name"] and c["2"]["name"]
    assert c["1"]["name"] is None and c["1"]["description"] is None
    assert c["1"]["error"].startswith("HTTP 500") and "gave up after 2 attempts" in c["1"]["error"]
    assert len(c["1"]["images"]) == 5  # the images it would have used are still recorded
    assert doc["status"] == "partial" and doc["n_failed"] == 1
    assert set(read_names(cdir)) == {0, 2}
    assert_clean(cdir, before)


def test_malformed_json_is_asked_again_then_reported(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    llm.script = ["badjson", "ok", "badjson", "badjson", "badbody"]
    stage_name(naming_cfg(tiny, llm, "naming.answer_retries=1"))
    c = names_doc(cdir)["clusters"]
    assert c["0"]["name"]  # a bad answer, then a good one
    assert c["1"]["name"] is None and "not valid JSON" in c["1"]["error"] and "after 2 answers" in c["1"]["error"]
    assert c["2"]["name"] is None and c["2"]["error"].startswith("bad response from the server")
    assert len(llm.requests) == 5


def test_stall_past_the_timeout(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=2)
    before = snapshot(cdir)
    llm.script = ["stall"]
    stage_name(naming_cfg(tiny, llm, "naming.timeout_s=1", "naming.retries=0"))
    c = names_doc(cdir)["clusters"]
    assert c["0"]["name"] is None and "timed out" in c["0"]["error"]
    assert c["1"]["name"].startswith("Shape")
    assert_clean(cdir, before)


def test_cache_second_run_sends_nothing(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    stage_name(naming_cfg(tiny, llm))
    first = names_doc(cdir)
    assert len(llm.requests) == 3
    stage_name(naming_cfg(tiny, llm))
    second = names_doc(cdir)
    assert len(llm.requests) == 3  # nothing more was sent
    assert second["requests_sent"] == 0
    assert {k: v["name"] for k, v in second["clusters"].items()} == {k: v["name"] for k, v in first["clusters"].items()}
    assert all(v["source"] == "cache" for v in second["clusters"].values())
    # another model, or another prompt, is another cache key
    stage_name(naming_cfg(tiny, llm, "naming.model=other"))
    assert len(llm.requests) == 6


def test_failed_clusters_are_retried_on_the_next_run_only(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    llm.script = ["ok", "500"]
    stage_name(naming_cfg(tiny, llm, "naming.retries=0"))
    assert names_doc(cdir)["n_failed"] == 1
    stage_name(naming_cfg(tiny, llm, "naming.retries=0"))
    doc = names_doc(cdir)
    assert doc["status"] == "complete" and doc["requests_sent"] == 1  # only the failed cluster paid again
    assert len(llm.requests) == 4


def test_dry_run_sends_nothing_and_writes_nothing(tiny, tmp_path, llm, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")  # a dry run needs no key
    cdir = make_clustering(tmp_path / "runs", k=2)
    stage_name(naming_cfg(tiny, llm, "naming.dry_run=true"))
    out = capsys.readouterr().out
    assert llm.requests == []
    assert not (cdir / "names.json").exists()
    assert "dry run" in out and out.count("/chat/completions model=gpt-4o") == 2
    assert "image/png" in out and "1-3 word name" in out


def test_no_key_is_a_clear_message(tiny, tmp_path, llm, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    cdir = make_clustering(tmp_path / "runs", k=2)
    code = main(["name", *tiny, f"run.key={KEY}", f"naming.base_url={llm.base_url}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "OPENAI_API_KEY" in err and "naming.api_key_env" in err
    assert llm.requests == [] and not (cdir / "names.json").exists()


def test_pipeline_without_key_still_runs(tiny, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src = make_clustering(tmp_path / "src", k=3)
    emb = src.parent.parent / "embeddings" / "test"
    run = run_pipeline(compose(tiny + ["run.key=nokey", f"embeddings={emb}", "naming=llm",
                                       "clustering.algorithm.k=3"]))
    assert "OPENAI_API_KEY" in caplog.text and "naming skipped" in caplog.text
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["n_clusters"] == 3 and "nmi" in metrics
    assert (run.path / "clusters" / CKEY / "labels.npy").is_file()
    assert not (run.path / "clusters" / CKEY / "names.json").exists()


def test_pipeline_stage_names_the_learned_clustering(tiny, tmp_path, llm):
    src = make_clustering(tmp_path / "src", k=3)
    emb = src.parent.parent / "embeddings" / "test"
    run = run_pipeline(compose(tiny + ["run.key=piped", f"embeddings={emb}", "clustering.algorithm.k=3",
                                       "naming=llm", f"naming.base_url={llm.base_url}", "naming.concurrency=2"]))
    doc = names_doc(run.path / "clusters" / CKEY)
    assert doc["status"] == "complete" and doc["n_named"] == 3 and len(llm.requests) == 3
    assert json.loads((run.path / "metrics.json").read_text())["nmi"] > 0.9


def test_pipeline_refuses_bad_naming_settings_before_any_work(tiny, tmp_path):
    with pytest.raises(SSLClusterError, match="naming.duplicates"):
        run_pipeline(compose(tiny + ["run.key=bad", "naming=llm", "naming.duplicates=never"]))
    assert not (tmp_path / "runs" / "bad").exists()


def test_naming_is_off_by_default(tiny, tmp_path, llm):
    src = make_clustering(tmp_path / "src", k=2)
    run = run_pipeline(compose(tiny + ["run.key=plain", f"embeddings={src.parent.parent / 'embeddings' / 'test'}",
                                       "clustering.algorithm.k=2"]))
    assert llm.requests == [] and not (run.path / "clusters" / CKEY / "names.json").exists()


def test_duplicate_names_asked_again_with_the_other_name_shown(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    llm.script = ["same", "same", "same", "ok", "same"]  # 0, 1, 2, then re-asks for 1 and 2
    stage_name(naming_cfg(tiny, llm))
    c = names_doc(cdir)["clusters"]
    assert c["0"]["name"] == "Same thing"
    assert c["1"]["name"].startswith("Shape") and c["1"]["renamed_from"] == "Same thing"
    assert '"Same thing"' in llm.requests[3]["prompt"][0]  # the taken name is shown
    assert llm.requests[3]["images"] == llm.requests[1]["images"]
    # cluster 2 answered "Same thing" again: it is suffixed
    assert c["2"]["name"] == "Same thing (2)" and c["2"]["renamed_from"] == "Same thing"
    assert c["1"]["name"] in llm.requests[4]["prompt"][0]
    assert len({v["name"].lower() for v in c.values()}) == 3


def test_duplicate_names_suffixed_without_asking(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=3)
    llm.script = ["same", "same", "same"]
    stage_name(naming_cfg(tiny, llm, "naming.duplicates=suffix"))
    names = [v["name"] for v in names_doc(cdir)["clusters"].values()]
    assert names == ["Same thing", "Same thing (2)", "Same thing (3)"] and len(llm.requests) == 3


@pytest.mark.parametrize("mode", ["skip", "label"])
def test_noise_cluster(tiny, tmp_path, llm, mode):
    cdir = make_clustering(tmp_path / "runs", k=2, noise=4)
    stage_name(naming_cfg(tiny, llm, f"naming.noise={mode}"))
    c = names_doc(cdir)["clusters"]
    assert len(llm.requests) == 2  # never a request for the noise
    if mode == "skip":
        assert set(c) == {"0", "1"}
    else:
        assert c["-1"]["name"] == "noise" and c["-1"]["source"] == "noise" and c["-1"]["size"] == 4


def test_request_cap_and_concurrency_limit(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=5)
    llm.script = ["pair"] * 5
    stage_name(naming_cfg(tiny, llm, "naming.max_requests=3", "naming.concurrency=2"))
    doc = names_doc(cdir)
    assert len(llm.requests) == 3 and doc["requests_sent"] == 3 and llm.max_in_flight == 2
    errors = [v["error"] for v in doc["clusters"].values() if v["name"] is None]
    assert len(errors) == 2 and all("naming.max_requests=3" in e for e in errors)


def test_jpeg_files_are_sent_as_jpeg_and_shrunk(tiny, tmp_path, llm):
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(8):
        p = folder / (f"{i}.jpg" if i % 2 else f"{i}.png")
        Image.new("RGB", (300, 120), (i * 30, 80, 160)).save(p)
        paths.append(str(p))
    make_clustering(tmp_path / "runs", k=2, per=4, paths=paths)
    stage_name(naming_cfg(tiny, llm, "naming.images.count=4", "naming.images.max_side=100"))
    r = llm.requests[0]
    assert r["n_images"] == 4
    assert sorted(r["mimes"]) == ["image/jpeg", "image/jpeg", "image/png", "image/png"]
    assert all(s == (100, 40) for s in r["sizes"])


def test_missing_image_is_a_per_cluster_error(tiny, tmp_path, llm):
    paths = [str(tmp_path / "gone.png")] * 4 + [f"sklearn:load_digits[{i}]" for i in range(4)]
    cdir = make_clustering(tmp_path / "runs", k=2, per=4, paths=paths)
    stage_name(naming_cfg(tiny, llm))
    c = names_doc(cdir)["clusters"]
    assert c["0"]["name"] is None and "image not found" in c["0"]["error"] and "gone.png" in c["0"]["error"]
    assert c["1"]["name"] and len(llm.requests) == 1


def test_names_of_other_labels_are_not_read(tiny, tmp_path, llm):
    cdir = make_clustering(tmp_path / "runs", k=2)
    stage_name(naming_cfg(tiny, llm))
    assert len(read_names(cdir)) == 2
    labels = np.load(cdir / "labels.npy")
    write_npy(cdir / "labels.npy", labels[::-1].copy())  # reclustered: the names no longer apply
    assert read_names(cdir) == {} and len(read_names(cdir, check=False)) == 2


def test_bad_settings_are_one_line_errors(tiny, tmp_path, llm):
    make_clustering(tmp_path / "runs", k=2)
    with pytest.raises(SSLClusterError, match="naming.noise"):
        stage_name(naming_cfg(tiny, llm, "naming.noise=drop"))
    with pytest.raises(SSLClusterError, match="naming.images.nearest"):
        stage_name(naming_cfg(tiny, llm, "naming.images.nearest=9"))
    with pytest.raises(SSLClusterError, match="naming.images.count must be an integer of at least 1"):
        stage_name(naming_cfg(tiny, llm, "naming.images.count=0"))
    with pytest.raises(SSLClusterError, match="naming.timeout_s must be positive"):
        stage_name(naming_cfg(tiny, llm, "naming.timeout_s=0"))
    with pytest.raises(SSLClusterError, match="no clustering 'nope'.*kmeans-test"):
        stage_name(naming_cfg(tiny, llm, "clustering.key=nope"))
    assert llm.requests == []


def test_client_backoff_is_exponential_and_bounded(llm):
    waits: list[float] = []
    settings = ClientSettings(model="m", base_url=llm.base_url, timeout_s=5, retries=4, backoff_s=0.01,
                              backoff_max_s=0.05, max_requests=10)
    client = NamingClient(settings, "sk-test", sleep=waits.append)
    llm.script = ["500", "503", "429", "429-wait"]
    assert json.loads(client.complete(build_messages("hi", [])))["name"] == "Shape 5"
    # 0.01 * 2**attempt, capped at 0.05; a Retry-After of 120 s is bounded by backoff_max_s too
    assert waits == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert client.requests_sent == 5
    llm.script = ["400"]
    with pytest.raises(NamingError, match="HTTP 400"):  # not retried
        client.complete(build_messages("hi", []))
    assert client.requests_sent == 6 and len(waits) == 4


# -- units ---------------------------------------------------------------------------------------------------------

def test_select_images_nearest_then_random():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    labels = np.zeros(20, dtype=np.int64)
    labels[15:] = 1
    picks = select_images(x, labels, 0, count=5, nearest=2, seed=0, l2=False)
    rows = [p.row for p in picks]
    assert len(set(rows)) == 5 and all(r < 15 for r in rows)
    centroid = x[:15].mean(0)
    d = ((x[:15] - centroid) ** 2).sum(1)
    assert rows[:2] == list(np.argsort(d)[:2])
    assert select_images(x, labels, 0, 5, 2, seed=0, l2=False) == picks  # seeded
    assert len(select_images(x, labels, 1, count=9, nearest=3, seed=0, l2=True)) == 5  # all members


def test_parse_answer_validates():
    assert parse_answer('{"name": "Round loops.", "description": "Digits  with\\nloops."}').name == "Round loops"
    assert parse_answer('```json\n{"name": "Ones", "description": "Thin strokes."}\n```').description == \
        "Thin strokes."
    for bad, msg in (("", "empty"), ("no json", "not valid JSON"), ("[1]", "not an object"),
                     ('{"name": "a b c d", "description": "x"}', "4 words"),
                     ('{"name": "ok"}', "description"), ('{"name": 3, "description": "x"}', "name")):
        with pytest.raises(AnswerError, match=msg):
            parse_answer(bad)


def test_encode_image_mime_and_size():
    img = Image.new("L", (8, 8), 128)
    e = encode_image(img, "sklearn:load_digits[0]", max_side=512, min_side=64)
    assert e.mime == "image/png" and (e.width, e.height) == (64, 64) and e.data_url.startswith("data:image/png;")
    e = encode_image(Image.new("RGB", (1000, 500)), "/x/a.JPG", max_side=200)
    assert e.mime == "image/jpeg" and (e.width, e.height) == (200, 100)
    assert encode_image(Image.new("RGB", (10, 10)), "/x/a.jpg", 64, fmt="png").mime == "image/png"


def test_names_flow_into_the_pictures(tiny, tmp_path, llm, monkeypatch):
    """Named clusters label the sample grid's rows and the scatter legend (the figures are captured as drawn)."""
    from sslcluster.evaluation import plots

    drawn: dict[str, list[str]] = {}

    def capture(fig, path, dpi=110):
        texts = [ax.get_ylabel() for ax in fig.axes]
        for ax in fig.axes:
            if ax.get_legend() is not None:
                texts += [t.get_text() for t in ax.get_legend().get_texts()]
        drawn[Path(path).name] = texts
        plots.plt.close(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save", capture)
    src = make_clustering(tmp_path / "src", k=3)
    emb = src.parent.parent / "embeddings" / "test"
    run = run_pipeline(compose(tiny + ["run.key=pics", f"embeddings={emb}", "clustering.algorithm.k=3",
                                       "naming=llm", f"naming.base_url={llm.base_url}",
                                       "evaluate.plots.enabled=true", "evaluate.plots.projections=[pca]",
                                       "evaluate.plots.images_per_cluster=2"]))
    names = {int(c): v["name"] for c, v in names_doc(run.path / "clusters" / CKEY)["clusters"].items()
             if v.get("name")}
    assert len(names) == 3
    for picture in ("samples.png", "scatter_pca.png"):
        text = " | ".join(drawn[picture])
        for c, name in names.items():
            assert f"{c}: {name}" in text, (picture, text)
