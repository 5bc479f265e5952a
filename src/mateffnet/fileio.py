"""Writing files so that a half-written file is never read as complete.

Everything the package writes that another step reads back (packed videos, checkpoints, model
folders, reports) goes through `atomic_path`: the content is written to a temporary name in the
same folder and renamed into place only once it is complete. A rename within one filesystem is
atomic, so a reader sees either the old file or the whole new one.

Output folders are opened in one place, `output_folder`: it creates the folder, proves it writable,
and reports what the operating system refused (EACCES, EROFS, ENOSPC, EEXIST, ENOTDIR, ...) as one
line naming the path (`os_error_line`), as a `MateffnetError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from mateffnet.errors import MateffnetError

# What each write error means to a user, and what to do about it.
_WRITE_ERRORS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device; free some space",
    errno.EDQUOT: "disk quota exceeded; free some space",
    errno.EEXIST: "exists and is not a folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "name too long",
}
WRITE_ERRNOS = frozenset(_WRITE_ERRORS)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; finished files get the usual permissions.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def os_error_line(error: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for a refused file operation: '<path>: no space left on device; free some space (ENOSPC)'."""
    where = error.filename if error.filename is not None else path
    code = errno.errorcode.get(error.errno, "")
    meaning = _WRITE_ERRORS.get(error.errno, (error.strerror or str(error)).lower())
    return f"{where}: {meaning}" + (f" ({code})" if code else "")


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create the output folder `path` (and its parents) if needed and prove that a file can be
    written in it; else raise a MateffnetError naming `what`, the path and the reason."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise MateffnetError(f"{what} {os_error_line(error, path)}; cannot write the output there") from None
    return path
