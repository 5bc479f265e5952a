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


# ------------------------------------------------------------------ output folders and OS errors (issue 18)

import errno  # noqa: E402

from mateffnet.errors import MateffnetError  # noqa: E402
from mateffnet.fileio import output_folder  # noqa: E402


def _refuse_writes(monkeypatch, code):
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@pytest.mark.parametrize("code, meaning", [
    (errno.EACCES, "permission denied (EACCES)"),
    (errno.EROFS, "read-only file system (EROFS)"),
    (errno.ENOSPC, "no space left on device; free some space (ENOSPC)"),
])
def test_an_output_folder_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, code, meaning):
    out = tmp_path / "out"
    _refuse_writes(monkeypatch, code)
    with pytest.raises(MateffnetError) as error:
        output_folder(out)
    assert str(error.value) == f"--out {out}: {meaning}; cannot write the output there"


def test_an_output_folder_that_is_a_file_or_under_a_file_is_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep")
    with pytest.raises(MateffnetError, match=rf"--out {taken}: exists and is not a folder \(EEXIST\)"):
        output_folder(taken)
    with pytest.raises(MateffnetError, match=rf"--out {taken / 'sub'}: a part of this path is a file, not a folder \(ENOTDIR\)"):
        output_folder(taken / "sub")
    assert taken.read_text() == "keep"


def test_an_output_folder_is_created_with_its_parents_and_left_clean(tmp_path):
    out = output_folder(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


def test_the_command_line_prints_a_write_error_as_one_line(tmp_path, monkeypatch, capsys):
    from mateffnet import cli

    def full_disk(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "metrics.csv"))

    monkeypatch.setattr(cli, "_run_train", full_disk)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert err == f"mateffnet train: error: {tmp_path / 'metrics.csv'}: no space left on device; free some space (ENOSPC)\n"
