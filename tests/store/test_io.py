"""Atomic writes: complete or absent, and created with the mode any other new file gets under the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from sslcluster.store.io import atomic_path, write_csv, write_json, write_npy, write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "a.json", {"a": 1})
        write_npy(tmp_path / "a.npy", np.zeros(3))
        write_csv(tmp_path / "a.csv", ["a"], [[1]])
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() makes under the same umask
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    for name in ("a.txt", "a.json", "a.npy", "a.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_csv_cells_are_utf8_and_give_every_file_name_back(tmp_path):
    """The run's CSVs (index.csv, skipped_files.csv, split.csv, compare's) hold any file name as valid UTF-8: an
    undecodable byte as \\xHH, a backslash doubled, the rest as it is; reading gives the name's bytes back. A file
    of an older version, which held the bytes as they were, reads the same."""
    import csv

    from sslcluster.store.io import csv_escape, csv_unescape, read_csv_rows, write_csv

    names = [os.fsdecode(b) for b in (b"bad_name_\xff\xfe.png", b"caf\xe9.png", b"a\\b.png", b"a\\xffb.png",
                                      b"\\", b"x\\\\y", "ünï,\"q\".png".encode(), b"plain.png")]
    assert csv_escape("plain.png") == "plain.png" and csv_escape("ünï.png") == "ünï.png"
    assert csv_escape(names[0]) == "bad_name_\\xff\\xfe.png"
    write_csv(tmp_path / "t.csv", ("id", "n"), [(n, i) for i, n in enumerate(names)])
    text = (tmp_path / "t.csv").read_bytes().decode("utf-8")  # strict
    rows = list(read_csv_rows(tmp_path / "t.csv"))
    assert rows[0] == ["id", "n"] and [os.fsencode(r[0]) for r in rows[1:]] == [os.fsencode(n) for n in names]
    assert [csv_unescape(r[0]) for r in csv.reader(text.splitlines())][1:] == names
    with open(tmp_path / "old.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        csv.writer(f).writerows([("id",), (names[0],), (names[1],)])
    assert [r[0] for r in read_csv_rows(tmp_path / "old.csv")][1:] == names[:2]
