"""Atomic file writes: a file exists under its final name only when it is complete.

Every writer creates a temporary file in the destination folder, flushes and fsyncs it, then renames it over the
final name (``os.replace`` is atomic on POSIX within one file system). The file gets the mode any new file
gets (``0666`` less the umask), so colleagues on a group-shared file system read a run as they read its
checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (numpy numbers and arrays, paths as plain values)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``."""
    with open(path) as f:
        return json.load(f)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` (any shape) as ``.npy`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


# -- CSV: valid UTF-8 whatever the file names ------------------------------------------------------------------
#
# A file name that is not valid UTF-8 reaches Python as a str holding its undecodable bytes as the surrogates
# U+DC80..U+DCFF (``os.fsdecode``, "surrogateescape"). In every CSV the package writes such a byte is written as
# ``\xHH`` (its hex value) and a backslash as ``\\``; any other lone surrogate as ``\uHHHH``; every other character
# as it is. The files are valid UTF-8 (any CSV reader, pandas, opens them) and the scheme is reversible:
# :func:`csv_unescape` gives the str back, ``os.fsencode`` of it the name's original bytes. Names that are valid UTF-8
# and hold no backslash (nearly all) are written unchanged.

_CSV_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")


def csv_escape(text: str) -> str:
    """``text`` as the package's CSV files hold it (see above): valid UTF-8, reversible by :func:`csv_unescape`."""
    if "\\" not in text:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _unescape_one(m: re.Match) -> str:
    code = m.group(1)
    if code == "\\":
        return "\\"
    value = int(code[1:], 16)
    if code[0] == "x":
        return chr(0xDC00 + value) if value >= 0x80 else chr(value)
    return chr(value)


def csv_unescape(cell: str) -> str:
    """The str :func:`csv_escape` wrote as ``cell`` (undecodable bytes as surrogates again: ``os.fsencode`` gives the
    original bytes). A backslash not followed by ``\\``, ``xHH`` or ``uHHHH`` is kept as it is."""
    return _CSV_ESCAPE.sub(_unescape_one, cell) if "\\" in cell else cell


def read_csv_rows(path: str | os.PathLike) -> Iterator[list[str]]:
    """The rows (header first) of a CSV the package wrote, every cell through :func:`csv_unescape`. Files of older
    versions, which held undecodable bytes as they were, read the same (decoded with "surrogateescape")."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        for row in csv.reader(f):
            yield [csv_unescape(c) for c in row]


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV table (``header``, then ``rows``) atomically, as UTF-8; text cells through :func:`csv_escape`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([csv_escape(h) for h in header])
            w.writerows([csv_escape(c) if isinstance(c, str) else c for c in row] for row in rows)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
