import os

import pytest

from mateffnet.fileio import atomic_path, atomic_write_text


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed halfway")
    assert list(tmp_path.iterdir()) == []


def test_a_finished_write_replaces_the_old_file_whole(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers still see the complete old file
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_finished_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o666 & ~mask
