"""Scanning and validating image folders that nobody curated.

A scan walks a folder (following symlinked folders, never the same folder twice, so symlink loops end), and
checks every file with an image extension: it opens it, checks its size against a pixel limit and, with
``validate='full'``, decodes it completely (which catches truncated files). Each file gets a verdict: usable, or
skipped with a reason. What happens to a bad file is the policy (``data.bad_files``):

- ``skip`` (default): the file is left out, and recorded with its reason (the stages write the list to
  ``skipped_files.csv`` in the run directory and log how many);
- ``fail``: the scan stops at the first bad file with an error naming its path and the reason.

Files without an image extension are never candidates: they are listed as skipped (reason ``not an image
extension``) but never stop a ``fail`` scan.

Verdicts are cached in a JSON file keyed by the root's absolute path and the scan settings; an entry is reused
while the file's relative path, size and modification time are unchanged, so a scan validates each file once and a
rescan costs one ``stat`` per file. The cache is written atomically; a cache that cannot be read or written is
ignored (with a warning), never fatal.

Images are loaded by :func:`open_image`: EXIF orientation applied, 16-bit and float images scaled to 8 bits,
transparency composited on white, palette / CMYK / grayscale converted to the requested mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from sslcluster.errors import SSLClusterError
from sslcluster.progress import progress
from sslcluster.store.io import atomic_path, read_csv_rows, write_csv

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
POLICIES = ("skip", "fail")
VALIDATE = ("full", "header")
#: Default pixel limit (width x height) per image: 200 megapixels, e.g. 14,000 x 14,000. PIL's own
#: decompression-bomb guard (89 MP warning, 179 MP error) is replaced by this explicit, configurable limit.
DEFAULT_MAX_PIXELS = 200_000_000
CACHE_VERSION = 1
SKIPPED_FILE = "skipped_files.csv"


def display_path(path: str | os.PathLike) -> str:
    """A printable form of a path whose name may not be valid UTF-8 (bytes shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Skipped:
    """A file left out of a scan: its path (``str``, undecodable bytes kept as surrogates) and why."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """Usable image files (absolute paths, sorted) and the skipped ones, of one folder."""

    root: Path
    files: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    validated: int = 0  # files inspected by this scan (not taken from the cache)


@contextlib.contextmanager
def _no_bomb_guard() -> Iterator[None]:
    """Let PIL open images of any size: :func:`inspect_image` applies its own limit before decoding."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def inspect_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, validate: str = "full") -> str | None:
    """``None`` if ``path`` is a usable image, else the reason it is not (one short line)."""
    try:
        with _no_bomb_guard(), Image.open(path) as img:
            w, h = img.size
            if w <= 0 or h <= 0:
                return f"empty image ({w}x{h})"
            if w * h > max_pixels:
                return f"too large: {w}x{h} = {w * h} pixels > data.scan.max_pixels={max_pixels}"
            if validate == "full":
                img.load()
    except Image.UnidentifiedImageError:
        return "not an image (unidentified format)"
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"unreadable image: {msg}"
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable, not the scan
        return f"unreadable image: {type(e).__name__}: {e}"
    return None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``) images scaled to 8-bit grayscale."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
        a = a.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    elif img.mode == "F" and a.size and float(np.nanmax(a)) <= 1.0:
        a = a.astype(np.float64) * 255.0  # floats in [0, 1]
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), mode="L")


def normalize_mode(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as ``L`` (channels=1) or ``RGB`` (channels=3): deep images scaled to 8 bits, alpha composited on
    white, palette and CMYK converted."""
    mode = "L" if channels == 1 else "RGB"
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def open_image(path: str, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully (EXIF orientation applied) as ``L`` or ``RGB``; a bad file raises SSLClusterError."""
    try:
        with _no_bomb_guard(), Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise SSLClusterError(f"image {display_path(path)} is {w}x{h}, over data.scan.max_pixels="
                                      f"{max_pixels}")
            img.load()
            img = ImageOps.exif_transpose(img)
            return normalize_mode(img, channels)
    except SSLClusterError:
        raise
    except Exception as e:  # noqa: BLE001 - file changed or broke after the scan
        raise SSLClusterError(f"cannot read image {display_path(path)}: {e}") from None


# -- walking ---------------------------------------------------------------------------------------------------

def _walk(root: Path) -> tuple[list[tuple[str, int, int]], list[Skipped]]:
    """(relative path, size, mtime_ns) of every image-extension file below ``root``, sorted, and the entries that
    are skipped without opening them (other extensions, broken links, link loops, unreadable folders)."""
    found: list[tuple[str, int, int]] = []
    skipped: list[Skipped] = []
    seen: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        skipped.append(Skipped(str(e.filename), f"cannot list folder: {e.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError as e:
            skipped.append(Skipped(dirpath, f"cannot open folder: {e.strerror}"))
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop, or a second link to a folder already scanned
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                ext = os.path.splitext(name)[1] or "(none)"
                skipped.append(Skipped(full, f"not an image extension: {ext}"))
                continue
            try:
                fst = os.stat(full)
            except OSError as e:
                kind = "symlink loop" if e.errno == 40 else ("broken symlink" if os.path.islink(full)
                                                              else "cannot stat")
                skipped.append(Skipped(full, f"{kind}: {e.strerror}"))
                continue
            if not os.path.isfile(full):
                skipped.append(Skipped(full, "not a regular file"))
                continue
            found.append((os.path.relpath(full, root), fst.st_size, fst.st_mtime_ns))
    return found, skipped


# -- cache -----------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$SSLCLUSTER_CACHE_DIR/scans``, else ``$XDG_CACHE_HOME/sslcluster/scans``, else ``~/.cache/...``."""
    env = os.environ.get("SSLCLUSTER_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "scans"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sslcluster" / "scans"


def cache_path(root: Path, max_pixels: int, validate: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of a root and scan settings."""
    key = json.dumps([CACHE_VERSION, os.fsencode(root.resolve()).hex(), max_pixels, validate])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / f"{digest}.json"


def _read_cache(path: Path) -> dict[tuple[str, int, int], str | None]:
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("version") != CACHE_VERSION:
            return {}
        return {(e[0], int(e[1]), int(e[2])): e[3] for e in data["entries"]}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        log.warning("ignoring unreadable scan cache %s: %s", path, e)
        return {}


def _write_cache(path: Path, root: Path, entries: dict[tuple[str, int, int], str | None]) -> None:
    data = {"version": CACHE_VERSION, "root": display_path(root.resolve()),
            "entries": [[k[0], k[1], k[2], v] for k, v in sorted(entries.items())]}
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data))  # ensure_ascii escapes undecodable names as \udcXX: round-trips
    except OSError as e:
        log.warning("cannot write scan cache %s: %s (the next scan validates again)", path, e)


# -- the scan --------------------------------------------------------------------------------------------------

def check_policy(policy: str) -> str:
    """``policy`` if it is one of POLICIES, else a one-line error naming data.bad_files."""
    if policy not in POLICIES:
        raise SSLClusterError(f"data.bad_files={policy!r}; valid: {', '.join(POLICIES)}")
    return policy


def _judge(root: Path, found: list[tuple[str, int, int]], skipped: list[Skipped], policy: str, max_pixels: int,
           validate: str, cpath: Path | None) -> tuple[list[str], list[Skipped], int]:
    """Usable files (paths ``root/<relative path>``), the skipped ones and how many were inspected, of the
    ``found`` entries (relative path, size, mtime_ns): verdicts taken from the cache file ``cpath`` while a file is
    unchanged, else from :func:`inspect_image`; the cache is rewritten with the verdicts of the entries found."""
    cached = _read_cache(cpath) if cpath else {}
    verdicts: dict[tuple[str, int, int], str | None] = {}
    files: list[str] = []
    validated = 0
    todo = sum(entry not in cached for entry in found)
    bar = progress(todo, f"scanning {display_path(root)}", unit="file") if todo >= 1000 else None
    try:
        for entry in found:
            full = os.path.join(root, entry[0])
            if entry in cached:
                reason = cached[entry]
            else:
                reason = inspect_image(full, max_pixels, validate)
                validated += 1
                if bar is not None:
                    bar.update(1)
            verdicts[entry] = reason
            if reason is None:
                files.append(full)
                continue
            if policy == "fail":
                raise SSLClusterError(f"bad image file {display_path(full)}: {reason} (data.bad_files=fail; "
                                      "data.bad_files=skip leaves such files out)")
            skipped.append(Skipped(full, reason))
    finally:
        if bar is not None:
            bar.close()
        if cpath is not None and validated:
            present = set(found)
            _write_cache(cpath, root, {**{k: v for k, v in cached.items() if k in present}, **verdicts})
    return files, skipped, validated


def scan_files(paths: Sequence[str], policy: str = "skip", max_pixels: int = DEFAULT_MAX_PIXELS,
               validate: str = "full", cache: bool = True, cache_dir: str | os.PathLike | None = None,
               cache_key: str = "files") -> ScanResult:
    """Check a list of image files (absolute paths, e.g. a FiftyOne dataset's) as :func:`scan_folder` checks a
    folder's: the same verdicts, policy and cache (one cache file per ``cache_key``). ``files`` keeps the order of
    ``paths``; a path that is missing, not a regular file or without an image extension is skipped with its
    reason (under ``fail`` too, as a scan stops only for image files that cannot be read)."""
    check_policy(policy)
    if validate not in VALIDATE:
        raise SSLClusterError(f"data.scan.validate={validate!r}; valid: {', '.join(VALIDATE)}")
    if int(max_pixels) <= 0:
        raise SSLClusterError(f"data.scan.max_pixels={max_pixels} must be positive")
    root = Path("/")
    found: list[tuple[str, int, int]] = []
    skipped: list[Skipped] = []
    for path in paths:
        full = os.path.abspath(path)
        if not full.lower().endswith(IMAGE_EXTENSIONS):
            skipped.append(Skipped(full, f"not an image extension: {os.path.splitext(full)[1] or '(none)'}"))
            continue
        try:
            st = os.stat(full)
        except OSError as e:
            skipped.append(Skipped(full, f"cannot stat: {e.strerror}"))
            continue
        if not os.path.isfile(full):
            skipped.append(Skipped(full, "not a regular file"))
            continue
        found.append((os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
    cpath = None
    if cache:
        digest = hashlib.sha256(cache_key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        cpath = base / f"files-{digest}-{int(max_pixels)}-{validate}.json"
    files, skipped, validated = _judge(root, found, skipped, policy, int(max_pixels), validate, cpath)
    if skipped:
        log.info("check of %d listed files: %d images, %d skipped", len(paths), len(files), len(skipped))
    return ScanResult(root, files, skipped, validated)


def scan_folder(root: str | os.PathLike, policy: str = "skip", max_pixels: int = DEFAULT_MAX_PIXELS,
                validate: str = "full", cache: bool = True,
                cache_dir: str | os.PathLike | None = None) -> ScanResult:
    """Scan ``root`` (see the module docstring). Raises SSLClusterError on the first bad file under ``fail``, and
    when no usable image is found."""
    check_policy(policy)
    if validate not in VALIDATE:
        raise SSLClusterError(f"data.scan.validate={validate!r}; valid: {', '.join(VALIDATE)}")
    if int(max_pixels) <= 0:
        raise SSLClusterError(f"data.scan.max_pixels={max_pixels} must be positive")
    root = Path(root)
    if not root.is_dir():
        raise SSLClusterError(f"image folder not found: {display_path(root)} (data.source.root)")
    found, skipped = _walk(root)
    cpath = cache_path(root, max_pixels, validate, cache_dir) if cache else None
    files, skipped, validated = _judge(root, found, skipped, policy, max_pixels, validate, cpath)
    if not files:
        if not found:
            raise SSLClusterError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under "
                                  f"{display_path(root)}")
        first = "; ".join(f"{display_path(s.path)}: {s.reason}" for s in skipped[:3])
        raise SSLClusterError(f"no readable image under {display_path(root)}: all {len(found)} image files "
                              f"were skipped (first: {first})")
    if skipped:
        log.info("scan of %s: %d images, %d files skipped", display_path(root), len(files), len(skipped))
    return ScanResult(root, files, skipped, validated)


# -- the skipped-files record ----------------------------------------------------------------------------------

def record_skipped(run_path: str | os.PathLike, split: str, skipped: Sequence[Skipped]) -> Path:
    """Write (or update) ``<run>/skipped_files.csv`` (columns split,path,reason): the rows of ``split`` are
    replaced by ``skipped``; other splits' rows are kept. Valid UTF-8: a name's undecodable bytes are written as
    ``\\xHH`` (:func:`sslcluster.store.io.csv_escape`), :func:`read_skipped` gives them back."""
    path = Path(run_path) / SKIPPED_FILE
    rows: list[tuple[str, str, str]] = []
    if path.exists():
        rows = [(r[0], r[1], r[2]) for r in list(read_csv_rows(path))[1:] if len(r) >= 3 and r[0] != split]
    rows += [(split, s.path, s.reason) for s in skipped]
    write_csv(path, ("split", "path", "reason"), rows)
    return path


def read_skipped(run_path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Rows (split, path, reason) of ``<run>/skipped_files.csv`` (paths as :class:`Skipped` holds them); empty if
    there is none."""
    path = Path(run_path) / SKIPPED_FILE
    if not path.exists():
        return []
    return [(r[0], r[1], r[2]) for r in list(read_csv_rows(path))[1:]]


def report_skipped(run_path: str | os.PathLike, split: str, source: object) -> int:
    """Record a source's skipped files (if it has any) in the run directory and log how many; returns the count.
    They are recorded under the source's ``skipped_split`` when it names one ("all": a folder split by holdout,
    whose bad files belong to neither split, is listed once), else under ``split``."""
    skipped = list(getattr(source, "skipped", None) or [])
    if getattr(source, "skipped", None) is None:
        return 0
    split = getattr(source, "skipped_split", None) or split
    path = record_skipped(run_path, split, skipped)
    if skipped:
        log.warning("split %r: %d files skipped (%s); listed with reasons in %s", split, len(skipped),
                    _reason_summary(skipped), path)
    return len(skipped)


def _reason_summary(skipped: Sequence[Skipped]) -> str:
    counts: dict[str, int] = {}
    for s in skipped:
        kind = s.reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
