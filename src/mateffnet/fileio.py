"""Writing files so that a half-written file is never read as complete.

Everything the package writes that another step reads back (packed videos, checkpoints, model
folders, reports) goes through `atomic_path`: the content is written to a temporary name in the
same folder and renamed into place only once it is complete. A rename within one filesystem is
atomic, so a reader sees either the old file or the whole new one.

Output folders are opened in one place, `output_folder`: it creates the folder, proves it writable,
and reports what the operating system refused (EACCES, EROFS, ENOSPC, EEXIST, ENOTDIR, ...) as one
line naming the path (`os_error_line`), as a `MateffnetError`.

A folder whose files must be read back exactly (a checkpoint) lists their SHA-256 in checksums.json
(`write_checksums`); `verify_checksums` names the first file that is missing or differs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sys
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
CHECKSUM_FILE = "checksums.json"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; finished files get the usual permissions.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path` (.<name>.<pid>.<random>.tmp); on success rename it to `path`,
    else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


_TEMPORARY_PID = re.compile(r"\.(\d+)\.[^.]+\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of `atomic_path` under `folder` whose process is gone (a temporary without a PID in
    its name counts as gone); a live process's temporaries are left alone. Returns the removed paths."""
    removed = []
    for leftover in Path(folder).rglob(".*.tmp"):
        match = _TEMPORARY_PID.search(leftover.name)
        if match and process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed.append(leftover)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill would terminate it there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    try:  # Linux: a process that has exited but is not reaped yet (a zombie) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def environment_errors(path: str | os.PathLike | None = None):
    """Turn an OSError of the environment (disk full, not writable, a file where a folder should be: the errnos
    of WRITE_ERRNOS) raised in the block into a one-line MateffnetError naming the path."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        raise MateffnetError(os_error_line(error, path)) from None


def remove_temporaries(path: str | os.PathLike) -> None:
    """Leftovers of `atomic_path` (.<name>.<random>.tmp) from an interrupted run."""
    path = Path(path)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)


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


def write_checksums(folder: Path) -> None:
    """checksums.json: SHA-256 of every file in `folder` (not in subfolders)."""
    folder = Path(folder)
    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUM_FILE}
    atomic_write_json(folder / CHECKSUM_FILE, {"sha256": sums})


def verify_checksums(folder: Path) -> None:
    """Raise a one-line MateffnetError naming the first file of `folder` that is missing or differs from
    checksums.json; a folder without checksums.json (older checkpoints) passes."""
    folder = Path(folder)
    listing = folder / CHECKSUM_FILE
    if not listing.is_file():
        return
    try:
        sums = json.loads(listing.read_text())["sha256"]
        items = sorted(sums.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise MateffnetError(f"{listing}: unreadable checksums; the checkpoint cannot be trusted") from None
    for name, expected in items:
        path = folder / name
        if not path.is_file():
            raise MateffnetError(f"{path}: missing from the checkpoint (listed in {CHECKSUM_FILE})")
        if _sha256(path) != expected:
            raise MateffnetError(
                f"{path}: damaged (its SHA-256 differs from {CHECKSUM_FILE}: truncated or changed since it was "
                "written); resume from another checkpoint or train afresh"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
