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
