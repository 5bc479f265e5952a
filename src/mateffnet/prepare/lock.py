"""Who may write a store at one time: one `mateffnet prepare` of the whole list, or one process per shard.

A run of the whole list holds an exclusive `fcntl.flock` on `STORE/.lock`; a run of shard i/n holds a shared
lock on `STORE/.lock` (shards write disjoint videos, so they may run together) and an exclusive one on
`STORE/.lock-i-of-n`. Each holder writes its PID into the file it holds exclusively, so a refusal can say who
has the store. The operating system drops a flock when its process dies, even by kill -9, so a lock is never
stale. Without fcntl (Windows) the lock is a file created with O_EXCL holding the PID, taken over when that
process is gone; there a whole-list run and shard runs do not exclude each other.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mateffnet.errors import MateffnetError
from mateffnet.fileio import process_alive

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".lock"


def shard_lock_name(shard: tuple[int, int]) -> str:
    return f"{LOCK}-{shard[0]}-of-{shard[1]}"


@contextlib.contextmanager
def store_lock(store: Path, shard: tuple[int, int]):
    """Hold the store (or its shard) for the block; MateffnetError naming the holder's PID if another has it."""
    if fcntl is None:
        with _exclusive_file(store / (LOCK if shard == (0, 1) else shard_lock_name(shard)), store):
            yield
        return
    with contextlib.ExitStack() as stack:
        whole = stack.enter_context(open(store / LOCK, "a+"))
        if shard == (0, 1):
            _flock(whole, fcntl.LOCK_EX, store)
            _write_pid(whole)
        else:
            _flock(whole, fcntl.LOCK_SH, store)
            own = stack.enter_context(open(store / shard_lock_name(shard), "a+"))
            _flock(own, fcntl.LOCK_EX, store, own_file=True)
            _write_pid(own)
        yield


def _flock(file, mode: int, store: Path, own_file: bool = False) -> None:
    try:
        fcntl.flock(file.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holders = [_read_pid(Path(file.name))] if own_file else _holders(store)
        raise _in_use(store, holders) from None


def _holders(store: Path) -> list[int | None]:
    """The live PIDs named in the store's lock files (a whole-list run's, or the shard runs')."""
    pids = [_read_pid(path) for path in sorted(store.glob(f"{LOCK}*"))]
    return [pid for pid in pids if pid is not None and process_alive(pid)]


def _in_use(store: Path, pids: list[int | None]) -> MateffnetError:
    known = [str(pid) for pid in pids if pid is not None]
    by = f" (PID {', '.join(known)})" if known else ""
    return MateffnetError(
        f"{store} is in use by another mateffnet prepare{by}; wait for it to finish, or give each process its own "
        "--shard i/n"
    )


def _write_pid(file) -> None:
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _exclusive_file(path: Path, store: Path):
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            pid = _read_pid(path)
            if pid is not None and process_alive(pid):
                raise _in_use(store, [pid]) from None
            path.unlink(missing_ok=True)  # its process is gone
    else:
        raise _in_use(store, [])
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)
