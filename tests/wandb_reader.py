"""Reading an offline W&B run folder back without W&B's servers, so the tests can check what a run logged.

W&B's Python package no longer ships a reader of its ``.wandb`` files (its service writes them), so this one is
written here: the file is a LevelDB-style log (7-byte header, 32 KiB blocks, chunked records) of W&B's protobuf
``Record`` messages, decoded with the message classes W&B ships.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

from sslcluster.errors import SSLClusterError

_BLOCK = 32768
_HEADER = 7


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file (W&B's LevelDB-style log: 7-byte header, 32 KiB blocks, chunked records)."""
    data = path.read_bytes()
    if len(data) < _HEADER:  # nothing written yet
        return
    if data[:4] != b":W&B":
        raise SSLClusterError(f"{path} is not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _set_nested(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def read_offline_run(folder: str | Path, wait_s: float = 0.0) -> dict[str, Any]:
    """What an offline W&B run folder holds: ``project``, ``group``, ``name``, ``job_type``, ``tags``, ``config``,
    ``summary`` (latest values, nested keys as dicts), ``history_keys``, ``artifacts`` (name, type, entries: path
    in the artifact -> staged local file; a logged table's images are there), ``files`` (under ``files/``) and
    ``complete`` (the run's exit record is on disk). W&B's service writes the file in blocks, possibly after
    ``finish()`` returned: ``wait_s`` polls that long for the exit record."""
    folder = Path(folder)
    deadline = time.monotonic() + wait_s
    while True:
        out = _parse_offline_run(folder)
        if out["complete"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.2)


def _parse_offline_run(folder: Path) -> dict[str, Any]:
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(folder.glob("run-*.wandb"))
    if not files:
        raise SSLClusterError(f"no run-*.wandb file in {folder}")
    out: dict[str, Any] = {"project": None, "group": None, "name": None, "job_type": None, "tags": [],
                           "config": {}, "summary": {}, "history_keys": set(), "artifacts": [], "complete": False}
    for data in _wandb_records(files[0]):
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError:  # a record still being written
            break
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(project=r.project, group=r.run_group, name=r.display_name, job_type=r.job_type,
                       tags=list(r.tags))
            for item in r.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                _set_nested(out["config"], list(item.nested_key) or [item.key], json.loads(item.value_json))
        elif kind == "summary":
            for item in rec.summary.update:
                _set_nested(out["summary"], list(item.nested_key) or [item.key], json.loads(item.value_json))
        elif kind == "history":
            for item in rec.history.item:
                out["history_keys"].add(item.nested_key[0] if item.nested_key else item.key)
        elif kind == "artifact":  # a logged table's artifact (W&B stages its files until `wandb sync`)
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type,
                                     "entries": {c.path: c.local_path for c in a.manifest.contents}})
        elif kind == "exit":
            out["complete"] = True
    out["config"].pop("_wandb", None)
    files_dir = folder / "files"
    out["files"] = sorted(str(p.relative_to(files_dir)) for p in files_dir.rglob("*") if p.is_file())
    return out


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run folders inside a run directory (``<run>/wandb/offline-run-*``), oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*"))
