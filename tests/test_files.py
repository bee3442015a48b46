"""common/files.py: a file is replaced whole or not at all."""

from __future__ import annotations

import pytest

from common.files import atomic_path, atomic_write_bytes


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".keras" and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers still see the old file while it is written
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "demos.npz"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.npz"]


def test_write_bytes_creates_a_new_file(tmp_path):
    atomic_write_bytes(tmp_path / "meta.json", b"{}\n")
    assert (tmp_path / "meta.json").read_bytes() == b"{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_a_written_file_gets_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp makes its file 0600; a model or export copied to another user or device must not stay private."""
    import os

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "model.bin", b"x")
        (tmp_path / "plain.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "model.bin").stat().st_mode & 0o777 == (tmp_path / "plain.bin").stat().st_mode & 0o777 == 0o644
