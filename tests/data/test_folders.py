"""Messy image folders: bad files under both policies, odd formats loading right, the scan cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslcluster.data import folders as scan_mod
from sslcluster.data.folders import (SKIPPED_FILE, display_path, inspect_image, open_image, read_skipped,
                                  record_skipped, scan_folder)
from sslcluster.data.sources import ImageFolderSource
from sslcluster.errors import SSLClusterError

BIG = 10_000  # side of the very large image


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build_messy_folder(root: Path) -> dict[str, dict]:
    """A folder with one of each kind of odd file. Returns {relative path: expectation} for the valid images
    (mode and size once loaded as RGB) and the bad ones (reason fragment)."""
    good, bad = {}, {}
    a, b = root / "a", root / "b"
    a.mkdir(parents=True)
    b.mkdir()
    (root / "empty_sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)

    def save(rel: str, img: Image.Image, size: tuple[int, int], **kw) -> None:
        img.save(root / rel, **kw)
        good[rel] = {"size": size}

    save("a/rgb.png", Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)), (20, 12))
    save("a/gray.png", Image.fromarray(rng.integers(0, 255, (9, 7), dtype=np.uint8), mode="L"), (7, 9))
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:3, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    save("a/rgba.png", Image.fromarray(rgba, mode="RGBA"), (6, 6))
    good["a/rgba.png"]["pixel"] = ((0, 5), (255, 255, 255))  # transparent -> white
    save("a/palette.gif", Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).convert("P"), (10, 10))
    save("a/cmyk.jpg", Image.new("CMYK", (8, 5), (0, 255, 255, 0)), (8, 5), quality=95)  # red in CMYK
    deep = np.full((4, 5), 32768, dtype=np.uint16)
    save("a/gray16.png", Image.fromarray(deep), (5, 4))
    good["a/gray16.png"]["pixel"] = ((0, 0), (128, 128, 128))  # 16-bit scaled to 8 bits, not clipped to 255
    save("a/tiny.png", Image.new("RGB", (1, 1), (1, 2, 3)), (1, 1))
    # EXIF orientation 6 (rotate 90 deg clockwise to display): stored 40 wide x 20 high, shown 20 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (0, 128, 0)).save(root / "b/rotated.jpg", exif=exif.tobytes())
    good["b/rotated.jpg"] = {"size": (20, 40)}
    # 10,000 x 10,000: a uniform grayscale PNG compresses to ~100 kB; over PIL's 89-megapixel bomb warning
    Image.new("L", (BIG, BIG), 77).save(root / "b/huge.png", optimize=False)
    good["b/huge.png"] = {"size": (BIG, BIG)}
    # a file name that is not valid UTF-8 (Latin-1 e-acute)
    raw = os.fsencode(b) + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write(_png_bytes(Image.new("RGB", (3, 3), (9, 9, 9))))
    good[os.fsdecode(b"b/caf\xe9.png")] = {"size": (3, 3)}
    # a symlink to a valid image is used; links to folders are followed but never twice
    os.symlink(root / "a/tiny.png", root / "b/link_to_tiny.png")
    good["b/link_to_tiny.png"] = {"size": (1, 1)}
    os.symlink(root, root / "b/loop")  # folder symlink loop back to the root

    # bad files
    full = _png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    (root / "a/truncated.png").write_bytes(full[: len(full) // 2])
    bad["a/truncated.png"] = "unreadable image"
    jpg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpg, format="JPEG")
    (root / "a/truncated.jpg").write_bytes(jpg.getvalue()[:300])
    bad["a/truncated.jpg"] = "unreadable image"
    (root / "a/text.jpg").write_text("this is not a picture\n")
    bad["a/text.jpg"] = "not an image"
    (root / "a/empty.png").write_bytes(b"")
    bad["a/empty.png"] = "not an image"
    (root / "a/random.webp").write_bytes(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    bad["a/random.webp"] = "not an image"
    (root / "b/notes.txt").write_text("lab notes\n")
    bad["b/notes.txt"] = "not an image extension"
    os.symlink(root / "does_not_exist.png", root / "b/dangling.png")
    bad["b/dangling.png"] = "broken symlink"
    os.symlink(root / "b/self2.png", root / "b/self1.png")
    os.symlink(root / "b/self1.png", root / "b/self2.png")
    bad["b/self1.png"] = "symlink loop"
    bad["b/self2.png"] = "symlink loop"
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "images"
    root.mkdir()
    return root, build_messy_folder(root)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLCLUSTER_CACHE_DIR", str(tmp_path / "cache"))


def test_skip_policy_keeps_every_valid_image_and_records_every_bad_one(messy, tmp_path):
    root, expect = messy
    result = scan_folder(root, policy="skip")
    rel = sorted(os.path.relpath(f, root) for f in result.files)
    assert rel == sorted(expect["good"])
    reasons = {os.path.relpath(s.path, root): s.reason for s in result.skipped}
    assert set(reasons) == set(expect["bad"])
    for name, fragment in expect["bad"].items():
        assert fragment in reasons[name], (name, reasons[name])
    # the record in the run directory round-trips, undecodable names included
    record_skipped(tmp_path, "train", result.skipped)
    rows = read_skipped(tmp_path)
    assert {os.path.relpath(p, root) for _, p, _ in rows} == set(expect["bad"])
    assert (tmp_path / SKIPPED_FILE).read_bytes().startswith(b"split,path,reason")


def test_fail_policy_stops_at_the_first_bad_file_with_path_and_reason(messy):
    root, expect = messy
    with pytest.raises(SSLClusterError) as e:
        scan_folder(root, policy="fail")
    msg = str(e.value)
    # sorted walk: a/ comes first, and a/empty.png is its first bad image file
    assert "a/empty.png" in msg and "not an image" in msg and "data.bad_files=fail" in msg
    assert "\n" not in msg


def test_fail_policy_passes_a_clean_folder_and_ignores_other_extensions(tmp_path):
    (tmp_path / "x").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "x/ok.png")
    (tmp_path / "x/readme.txt").write_text("hi")
    result = scan_folder(tmp_path, policy="fail")
    assert len(result.files) == 1 and [s.reason for s in result.skipped] == ["not an image extension: .txt"]


def test_valid_odd_formats_load_to_the_right_mode_and_size(messy):
    root, expect = messy
    src = ImageFolderSource(str(root), split=None, channels=3)
    by_id = {i: k for k, i in enumerate(src.ids)}
    for rel, exp in expect["good"].items():
        img = src.load(by_id[Path(rel).as_posix()])
        assert img.mode == "RGB", rel
        assert img.size == exp["size"], (rel, img.size)
        if "pixel" in exp:
            xy, value = exp["pixel"]
            assert img.getpixel(xy) == value, (rel, img.getpixel(xy))
    cmyk = src.load(by_id["a/cmyk.jpg"]).getpixel((4, 2))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # CMYK red is RGB red
    gray = open_image(str(root / "a/gray16.png"), channels=1)
    assert gray.mode == "L" and gray.getpixel((0, 0)) == 128
    # grayscale sources get one channel
    assert ImageFolderSource(str(root), split=None, channels=1).load(by_id["a/rgb.png"]).mode == "L"
    # folders as labels: only a/ and b/ have images (empty_sub/ has none)
    assert src.classes == ["a", "b"] and set(src.labels.tolist()) == {0, 1}
    assert len(src.skipped) == len(expect["bad"])


def test_pixel_limit_is_a_policy(messy):
    root, _ = messy
    assert inspect_image(str(root / "b/huge.png"), max_pixels=BIG * BIG) is None
    reason = inspect_image(str(root / "b/huge.png"), max_pixels=50_000_000, validate="header")
    assert reason is not None and "too large" in reason and "10000x10000" in reason
    with pytest.raises(SSLClusterError, match="max_pixels"):
        scan_folder(root / "b", policy="fail", max_pixels=50_000_000, validate="header")


def test_scan_is_cached_and_revalidates_only_changed_files(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        Image.new("RGB", (4, 4), (i, i, i)).save(root / f"{i}.png")
    calls: list[str] = []
    real = scan_mod.inspect_image

    def counting(path, *a, **k):
        calls.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(scan_mod, "inspect_image", counting)
    first = scan_folder(root)
    assert len(calls) == 5 and first.validated == 5
    cache_files = list((tmp_path / "cache" / "scans").glob("*.json"))
    assert len(cache_files) == 1 and not list((tmp_path / "cache" / "scans").glob("*.tmp"))
    second = scan_folder(root)
    assert len(calls) == 5 and second.validated == 0 and second.files == first.files
    # break one file (new size and mtime): only it is validated again, and now skipped
    (root / "3.png").write_bytes(b"garbage")
    third = scan_folder(root)
    assert calls[5:] == [str(root / "3.png")]
    assert [Path(s.path).name for s in third.skipped] == ["3.png"]
    # other settings have their own cache entry
    scan_folder(root, validate="header")
    assert len(calls) == 11
    # a corrupt cache file is ignored, not fatal
    for c in (tmp_path / "cache" / "scans").glob("*.json"):
        c.write_text("{not json")
    assert len(scan_folder(root).files) == 4


def test_empty_root_and_all_bad_root_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SSLClusterError, match="no image files"):
        ImageFolderSource(str(tmp_path / "empty"), split=None)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(SSLClusterError, match="no readable image.*x.png"):
        ImageFolderSource(str(tmp_path / "bad"), split=None)
    with pytest.raises(SSLClusterError, match="not found"):
        ImageFolderSource(str(tmp_path / "missing"), split=None)
    with pytest.raises(SSLClusterError, match="data.bad_files='maybe'"):
        scan_folder(tmp_path / "bad", policy="maybe")


def test_display_path_shows_undecodable_bytes():
    assert display_path(os.fsdecode(b"/x/caf\xe9.png")) == "/x/caf\\xe9.png"


def _small_messy_tree(root: Path) -> int:
    """Two classes of 24 valid images each plus bad files; returns how many bad files."""
    rng = np.random.default_rng(1)
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    os.rename(root / "dogs" / "23.png", os.fsencode(root / "dogs") + b"/caf\xe9.png")  # a non-UTF-8 name
    os.rename(root / "dogs" / "22.png", os.fsencode(root / "dogs") + BAD_NAME)  # bytes that are no UTF-8 at all
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(os.fsencode(root / "cats") + BAD_SKIPPED, "wb") as f:  # an unreadable file of such a name
        f.write(b"not an image")
    (root / "dogs" / "notes.txt").write_text("hi")
    (root / "empty").mkdir()
    return 3


#: planted file names that are not valid UTF-8 (an image; a file that is none, after cats/broken.jpg in scan order)
BAD_NAME = b"/bad_name_\xff\xfe.png"
BAD_SKIPPED = b"/zz_bad_name_\xff\xfe.png"


def test_pipeline_on_a_messy_folder_records_and_reports_skipped_files(tiny, tmp_path, capsys):
    from sslcluster.cli import main

    root = tmp_path / "photos"
    n_bad = _small_messy_tree(root)
    folder = tiny + ["data=image_folder", f"data.source.root={root}", "data.num_workers=0", "data.batch_size=16",
                     "clustering.algorithm.k=2"]
    assert main(["run", *folder, "run.key=messy"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "messy"
    # the folder has no train/ and test/: its bad files belong to neither split and are listed once
    assert f"skipped files: {n_bad} in all" in out
    rows = read_skipped(run)
    bad = os.fsdecode(BAD_SKIPPED[1:])
    assert sorted((s, Path(p).name) for s, p, _ in rows) == [("all", "broken.jpg"), ("all", "notes.txt"),
                                                            ("all", bad)]
    # every CSV of the run is valid UTF-8 whatever the file names, and gives their bytes back
    import csv

    import pandas as pd

    from sslcluster.store.io import csv_unescape

    written = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.csv"))
    assert {"skipped_files.csv", "split.csv", "embeddings/train/index.csv", "embeddings/test/index.csv"} <= set(written)
    for name in written:
        (run / name).read_bytes().decode("utf-8")  # strict: raises on any byte that is not UTF-8
        with open(run / name, newline="", encoding="utf-8") as f:
            assert list(csv.reader(f))
    raw = {os.fsencode(csv_unescape(p)) for p in pd.read_csv(run / SKIPPED_FILE)["path"]}
    assert os.fsencode(root / "cats") + BAD_SKIPPED in raw and len(raw) == len(rows) == n_bad
    index = pd.concat([pd.read_csv(run / "embeddings" / s / "index.csv", keep_default_na=False)
                       for s in ("train", "test")])
    assert "dogs/bad_name_\\xff\\xfe.png" in set(index["id"])  # escaped as \xHH: readable, valid UTF-8
    assert os.fsencode(root / "dogs") + BAD_NAME in {os.fsencode(csv_unescape(p)) for p in index["path"]}
    split = pd.read_csv(run / "split.csv")
    assert {os.fsencode(csv_unescape(i)) for i in split["id"]} >= {b"dogs/caf\xe9.png", b"dogs" + BAD_NAME}
    import json

    # the 48 readable images split into a held-out test fifth (data.holdout_fraction=0.2) and train
    counts = {s: json.loads((run / "embeddings" / s / "manifest.json").read_text()) for s in ("train", "test")}
    assert (counts["train"]["count"], counts["test"]["count"]) == (38, 10)
    assert counts["test"]["skipped_files"] == n_bad and counts["train"]["skipped_files"] == n_bad
    from sslcluster.store.embeddings import read_embeddings

    both = {s: read_embeddings(run / "embeddings" / s, with_labels=True) for s in ("train", "test")}
    assert not set(both["train"].index.ids) & set(both["test"].index.ids)
    for odd in (os.fsdecode(b"dogs/caf\xe9.png"), os.fsdecode(b"dogs" + BAD_NAME)):
        es = next(e for e in both.values() if odd in e.index.ids)  # the odd name round-trips index.csv
        assert es.index.labels[es.index.ids.index(odd)] == 1
        assert Path(es.index.paths[es.index.ids.index(odd)]).is_file()
    # the fail policy stops with one line naming the file and the reason, and leaves no run behind
    assert main(["run", *folder, "run.key=strict", "data.bad_files=fail"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cats/broken.jpg" in err and "unreadable image" in err
    assert not (tmp_path / "runs" / "strict").exists()


def test_classes_are_folders_with_images_shared_by_both_splits(tmp_path):
    """A class seen only in test/ keeps its id when train/ is read; a folder without a readable image (empty, or
    only bad files) is no class: it would inflate the class count that Hungarian accuracy and k default to."""
    for split, names in (("train", ("a", "b")), ("test", ("a", "b", "c"))):
        for c in names:
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / split / c / "x.png")
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "test" / "junk").mkdir()
    (tmp_path / "test" / "junk" / "bad.png").write_text("not an image")
    train = ImageFolderSource(str(tmp_path), split="train")
    test = ImageFolderSource(str(tmp_path), split="test")
    assert train.classes == test.classes == ["a", "b", "c"]
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [0, 1, 2]
