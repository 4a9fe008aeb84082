"""The naming stage: one clustering in, ``clusters/<key>/names.json`` out (schema in :mod:`sslcluster.naming`).

For each cluster: pick images (:mod:`sslcluster.naming.select`), load them through
:func:`sslcluster.data.resolve.load_image`, encode them (:mod:`sslcluster.naming.images`), look the request up in
the cache (:mod:`sslcluster.naming.cache`), else send it (:mod:`sslcluster.naming.client`, at most
``naming.concurrency`` at once) and validate the answer (:mod:`sslcluster.naming.prompt`). Then duplicate names
are told apart, in cluster order, and ``names.json`` is written once, atomically. ``record.json`` and
``labels.npy`` are only read."""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslcluster.data.resolve import load_image
from sslcluster.errors import SSLClusterError
from sslcluster.naming.cache import AnswerCache, cache_key
from sslcluster.naming.names import NAMES
from sslcluster.naming.client import (ClientSettings, NamingClient, NamingError, api_key, missing_key_message,
                                      request_kwargs)
from sslcluster.naming.images import EncodedImage, choose_format, encode_image
from sslcluster.naming.prompt import Answer, AnswerError, build_messages, parse_answer, prompt_text
from sslcluster.naming.select import Pick, select_images
from sslcluster.store.clusters import Clustering
from sslcluster.store.io import file_sha256, write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NOISE = -1
NOISE_NAME = "noise"
NOISE_DESCRIPTION = "Points the clustering left unassigned (label -1)."
NOISE_MODES = ("skip", "label")
DUPLICATE_MODES = ("ask", "suffix")
DETAILS = ("low", "high", "auto")


class NoAPIKey(SSLClusterError):
    """No API key in the environment; the message says what to set."""


@dataclass
class ClusterJob:
    """One cluster's request and, once done, its outcome."""

    cluster: int
    size: int
    picks: list[Pick]
    ids: list[str]
    paths: list[str]
    images: list[EncodedImage] = field(default_factory=list)
    answer: Answer | None = None
    source: str | None = None  # "llm" | "cache" | "noise"
    error: str | None = None
    renamed_from: str | None = None

    def _images_or_none(self) -> list[EncodedImage | None]:
        """The encoded image of each pick, or None for each when they were not loaded."""
        return list(self.images) if self.images else [None] * len(self.picks)

    def entry(self) -> dict[str, Any]:
        """This cluster's entry in names.json: name, description, the images shown, size, source and error."""
        out: dict[str, Any] = {
            "name": self.answer.name if self.answer else None,
            "description": self.answer.description if self.answer else None,
            "images": [{"row": p.row, "id": i, "path": s, "pick": p.how,
                        **({"mime": e.mime} if e is not None else {})}
                       for p, i, s, e in zip(self.picks, self.ids, self.paths, self._images_or_none())],
            "size": self.size,
            "source": self.source,
            "error": self.error,
        }
        if self.renamed_from:
            out["renamed_from"] = self.renamed_from
        return out


def _settings(ncfg: DictConfig) -> ClientSettings:
    return ClientSettings(model=str(ncfg.model), base_url=ncfg.base_url, api_key_env=str(ncfg.api_key_env),
                          timeout_s=float(ncfg.timeout_s), retries=int(ncfg.retries), backoff_s=float(ncfg.backoff_s),
                          backoff_max_s=float(ncfg.backoff_max_s), max_requests=int(ncfg.max_requests),
                          temperature=ncfg.temperature, max_tokens=ncfg.max_tokens, json_mode=bool(ncfg.json_mode))


def check_settings(ncfg: DictConfig) -> None:
    """Refuse bad ``naming.*`` settings with one line naming the key (the pipeline calls this before training)."""
    for key, value, allowed in (("noise", ncfg.noise, NOISE_MODES), ("duplicates", ncfg.duplicates, DUPLICATE_MODES),
                                ("images.detail", ncfg.images.detail, DETAILS)):
        if value not in allowed:
            raise SSLClusterError(f"naming.{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key, low in (("concurrency", 1), ("answer_retries", 0), ("max_name_words", 1), ("images.count", 1),
                     ("images.nearest", 0), ("images.max_side", 1), ("images.min_side", 0)):
        value = OmegaConf.select(ncfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SSLClusterError(f"naming.{key} must be an integer of at least {low}, got {value!r}")
    if ncfg.images.nearest > ncfg.images.count:
        raise SSLClusterError(f"naming.images.nearest must be between 0 and naming.images.count "
                              f"({ncfg.images.count}), got {ncfg.images.nearest}")
    if ncfg.images.min_side > ncfg.images.max_side:
        raise SSLClusterError(f"naming.images.min_side ({ncfg.images.min_side}) is larger than "
                              f"naming.images.max_side ({ncfg.images.max_side})")
    if not str(ncfg.prompt).strip():
        raise SSLClusterError("naming.prompt is empty")
    choose_format(str(ncfg.images.format), "")
    try:
        _settings(ncfg).check()
    except (TypeError, ValueError) as e:
        raise SSLClusterError(f"bad naming setting: {e}") from None


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


class Namer:
    """Names the clusters of one clustering with the settings ``cfg.naming``."""

    def __init__(self, cfg: DictConfig, cluster_dir: Path, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.ncfg = cfg.naming
        check_settings(self.ncfg)
        self.settings = _settings(self.ncfg)
        self.cluster_dir = Path(cluster_dir)
        self.out = out or sys.stdout
        self.dry_run = bool(self.ncfg.dry_run)
        self.cache = AnswerCache(self.ncfg.cache_dir) if self.ncfg.cache_dir else None
        self.prompt = prompt_text(str(self.ncfg.prompt))
        self.client: NamingClient | None = None

    # -- preparing -------------------------------------------------------------------------------------------
    def prepare(self) -> tuple[dict[str, Any], np.ndarray, list[ClusterJob]]:
        """Read the clustering and its embeddings; pick and encode each cluster's images."""
        clustering = Clustering(self.cluster_dir)
        record, labels = clustering.load()
        es = clustering.read_embeddings(record, labels)
        l2 = "l2" in (record.get("preprocess") or [])
        icfg = self.ncfg.images
        fallback = OmegaConf.select(self.cfg, "data.source.root", default=None)
        root = clustering.data_root(str(fallback) if fallback else None)
        jobs: list[ClusterJob] = []
        for c in sorted(int(v) for v in np.unique(labels)):
            if c == NOISE:
                if self.ncfg.noise == "label":
                    jobs.append(ClusterJob(c, int((labels == c).sum()), [], [], [],
                                           answer=Answer(NOISE_NAME, NOISE_DESCRIPTION), source="noise"))
                continue
            picks = select_images(es.array, labels, c, int(icfg.count), int(icfg.nearest), int(icfg.seed), l2)
            job = ClusterJob(c, int((labels == c).sum()), picks, [es.index.ids[p.row] for p in picks],
                             [es.index.paths[p.row] for p in picks])
            try:
                job.images = [encode_image(load_image(path, torchvision_root=root), path, int(icfg.max_side),
                                           int(icfg.min_side), str(icfg.format), int(icfg.jpeg_quality))
                              for path in job.paths]
            except SSLClusterError as e:
                job.error = f"could not load its images: {e}"
            jobs.append(job)
        return record, labels, jobs

    # -- asking ----------------------------------------------------------------------------------------------
    def _ask(self, job: ClusterJob, text: str) -> tuple[Answer, str]:
        """The answer for ``job`` with prompt ``text``, from the cache or the model; raises NamingError."""
        key = cache_key(self.settings.model, text, [im.sha256 for im in job.images])
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit, "cache"
        assert self.client is not None
        messages = build_messages(text, job.images, str(self.ncfg.images.detail))
        last = ""
        for _ in range(int(self.ncfg.answer_retries) + 1):
            reply = self.client.complete(messages)
            try:
                answer = parse_answer(reply, int(self.ncfg.max_name_words))
            except AnswerError as e:
                last = str(e)
                continue
            if self.cache is not None:
                self.cache.put(key, answer, self.settings.model)
            return answer, "llm"
        raise NamingError(f"{last} (after {int(self.ncfg.answer_retries) + 1} answers)")

    def _run_job(self, job: ClusterJob) -> None:
        try:
            job.answer, job.source = self._ask(job, self.prompt)
        except NamingError as e:
            job.error = str(e)
        except Exception as e:  # noqa: BLE001 - one cluster's surprise must not lose the others' names
            log.exception("cluster %d: naming failed", job.cluster)
            job.error = f"unexpected error: {type(e).__name__}: {e}"

    def _dedupe(self, jobs: list[ClusterJob]) -> None:
        """Tell apart clusters given the same name, in cluster order: the first keeps it; later ones are asked
        again with the taken names shown (``duplicates: ask``), and suffixed " (2)", " (3)"... if still equal."""
        taken: dict[str, str] = {}  # normalised name -> name as given
        for job in jobs:
            if job.answer is None:
                continue
            if _norm(job.answer.name) in taken:
                original = job.answer
                if self.ncfg.duplicates == "ask" and job.source != "noise":
                    try:
                        answer, source = self._ask(job, prompt_text(str(self.ncfg.prompt), sorted(taken.values())))
                        if _norm(answer.name) not in taken:
                            job.answer, job.source = answer, source
                    except Exception as e:  # noqa: BLE001 - the suffix below still tells the names apart
                        log.warning("cluster %d: asking again for a distinct name failed (%s); suffixing",
                                    job.cluster, e)
                if _norm(job.answer.name) in taken:
                    k = 2
                    while _norm(f"{original.name} ({k})") in taken:
                        k += 1
                    job.answer = Answer(f"{original.name} ({k})", original.description)
                job.renamed_from = original.name
            taken[_norm(job.answer.name)] = job.answer.name

    # -- dry run ---------------------------------------------------------------------------------------------
    def _show(self, job: ClusterJob) -> None:
        if job.source == "noise":
            print(f"cluster {job.cluster}: named {NOISE_NAME!r} without a request", file=self.out)
            return
        if job.error:
            print(f"cluster {job.cluster}: error: {job.error}", file=self.out)
            return
        key = cache_key(self.settings.model, self.prompt, [im.sha256 for im in job.images])
        cached = self.cache is not None and self.cache.get(key) is not None
        imgs = ", ".join(f"{im.mime} {im.width}x{im.height} {im.nbytes} B" for im in job.images)
        extra = {k: v for k, v in request_kwargs(self.settings, []).items() if k not in ("model", "messages")}
        url = self.settings.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        print(f"cluster {job.cluster} ({job.size} members): POST {url.rstrip('/')}"
              f"/chat/completions model={self.settings.model} {extra} "
              f"{'(cached: would not be sent) ' if cached else ''}images [{imgs}] "
              f"rows {[p.row for p in job.picks]}", file=self.out)
        print(f"  prompt: {self.prompt}", file=self.out)

    # -- the whole stage -------------------------------------------------------------------------------------
    def run(self, strict: bool = True) -> Path | None:
        """Name every cluster and write ``names.json``; return its path (None for a dry run, or when there is no
        key and ``strict`` is false). Without a key, raise :class:`NoAPIKey` (``strict``) or warn and return."""
        key = api_key(self.settings)
        if key is None and not self.dry_run:
            message = missing_key_message(self.settings.api_key_env)
            if strict:
                raise NoAPIKey(message)
            log.warning("%s; naming skipped", message)
            return None
        t0 = time.perf_counter()
        record, labels, jobs = self.prepare()
        if self.dry_run:
            print(f"dry run: {len(jobs)} clusters of {self.cluster_dir}; nothing is sent", file=self.out)
            for job in jobs:
                self._show(job)
            return None
        self.client = NamingClient(self.settings, key or "")
        todo = [j for j in jobs if j.answer is None and j.error is None]
        with ThreadPoolExecutor(max_workers=int(self.ncfg.concurrency), thread_name_prefix="naming") as pool:
            list(pool.map(self._run_job, todo))
        self._dedupe(jobs)
        path = self.write(record, jobs, time.perf_counter() - t0)
        for job in jobs:
            if job.answer is not None:
                print(f"cluster {job.cluster}: {job.answer.name} - {job.answer.description}", file=self.out)
            else:
                print(f"cluster {job.cluster}: error: {job.error}", file=self.out)
        return path

    def write(self, record: dict[str, Any], jobs: list[ClusterJob], seconds: float) -> Path:
        """Write names.json for ``jobs`` into the clustering folder; its path."""
        n_named = sum(j.answer is not None for j in jobs)
        doc = {
            "schema": SCHEMA_VERSION,
            "cluster_key": record.get("key", self.cluster_dir.name),
            "status": "complete" if n_named == len(jobs) else "partial",
            "model": self.settings.model,
            "base_url": self.settings.base_url,
            "prompt": self.prompt,
            "labels_sha256": file_sha256(self.cluster_dir / "labels.npy"),
            "ids_sha256": record.get("ids_sha256"),
            "noise": str(self.ncfg.noise),
            "n_clusters": len(jobs),
            "n_named": n_named,
            "n_failed": len(jobs) - n_named,
            "requests_sent": self.client.requests_sent if self.client else 0,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "clusters": {str(j.cluster): j.entry() for j in jobs},
        }
        path = self.cluster_dir / NAMES
        write_json(path, doc)
        return path


def name_clustering(cfg: DictConfig, cluster_dir: Path, strict: bool = True, out: TextIO | None = None) -> Path | None:
    """Name the clusters in ``cluster_dir`` with ``cfg.naming``; see :meth:`Namer.run`."""
    return Namer(cfg, cluster_dir, out).run(strict=strict)


def name_in_pipeline(cfg: DictConfig, cluster_dir: Path) -> Path | None:
    """The pipeline's optional naming step: never fails the run. A missing key, a bad setting or any other
    failure is logged and naming is skipped; per-cluster failures are recorded in ``names.json``."""
    try:
        return name_clustering(cfg, cluster_dir, strict=False)
    except SSLClusterError as e:
        log.warning("cluster naming skipped: %s", e)
    except Exception:  # noqa: BLE001 - an optional stage must not cost the run its results
        log.exception("cluster naming failed; the run goes on without names")
    return None
