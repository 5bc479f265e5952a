"""Shared memory between the main process of `mateffnet prepare` and one of its workers (flow across
videos): decoded frames go worker → main and quantised flow main → worker through it, so the pipes
carry only small messages (`messages.Placed` says where an array lies).

One file per worker in /dev/shm (the temporary directory where there is none), created by the main
process and mapped by both; the main process unlinks it once the worker has mapped it, so nothing is
left behind when either process dies (`remove_stale_regions` removes the files of a main process killed
before that). The file holds two areas, each a ring of byte ranges handed out in order and given back
in the same order: `frames` (the worker writes a chunk, the main process copies it out at once and
gives the range back) and `flows` (the main process writes, the worker encodes and gives it back).
Pages are reserved (posix_fallocate) before they are first written: on a full /dev/shm an array goes
through the pipe instead (a write to unreserved tmpfs pages that cannot be had kills with SIGBUS).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import tempfile
from collections import deque
from itertools import count
from pathlib import Path

import numpy as np

from mateffnet.fileio import process_alive
from mateffnet.prepare.messages import Placed

# Bytes of each area per worker (virtual; pages are only reserved as they are used): three chunks of 64
# frames at 340x256, or about 380 flow fields of that size. An array that does not fit goes through the pipe.
AREA_BYTES = {"frames": 64 << 20, "flows": 64 << 20}
PREFIX = "mateffnet-prepare-"
AVAILABLE = sys.platform.startswith("linux")  # posix_fallocate, and unlinking a file that is open
_serial = count()  # regions made by this process


class Ring:
    """Byte ranges of an area of `capacity` bytes, handed out in order and given back in the same order."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.held: deque[tuple[int, int]] = deque()  # (offset, size), oldest first

    def take(self, size: int) -> int | None:
        """The offset of `size` free bytes, or None while there are not that many in one piece."""
        if not 0 < size <= self.capacity:
            return None
        if not self.held:
            offset = 0
        else:
            oldest = self.held[0][0]
            newest, newest_size = self.held[-1]
            end = newest + newest_size
            if newest >= oldest:  # the ranges held do not wrap: free space after them and before them
                offset = end if end + size <= self.capacity else 0 if size <= oldest else None
            else:
                offset = end if end + size <= oldest else None
            if offset is None:
                return None
        self.held.append((offset, size))
        return offset

    def give_back(self, offset: int) -> None:
        if not self.held or self.held[0][0] != offset:
            raise ValueError(f"shared range {offset} given back out of order (oldest held: {self.held and self.held[0]})")
        self.held.popleft()


class SharedRegion:
    """A worker's shared file, mapped: `place` writes into the area this process writes to, `array` reads a
    `Placed` array of either area, `give_back` returns a range of this process's area once the other has read it."""

    def __init__(self, path: str | os.PathLike, sizes: dict[str, int], create: bool = False):
        """`sizes`: bytes of the "frames" and the "flows" area (the worker is given those the main process made)."""
        self.path, self.sizes = str(path), dict(sizes)
        self.bases = {"frames": 0, "flows": sizes["frames"]}
        total = sizes["frames"] + sizes["flows"]
        self.fd = os.open(self.path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        try:
            if create:
                os.ftruncate(self.fd, total)  # sparse: no memory is used until pages are reserved
            self.map = mmap.mmap(self.fd, total)
        except BaseException:
            os.close(self.fd)
            raise
        self.rings = {area: Ring(size) for area, size in sizes.items()}
        self.reserved = dict.fromkeys(sizes, 0)  # bytes from the area's start known to be reserved
        self.unusable = False  # reserving failed once (a full /dev/shm): every array goes through the pipe

    @classmethod
    def create(cls) -> SharedRegion | None:
        """A new region for a worker of this process, or None where shared memory is not to be had."""
        if not AVAILABLE:
            return None
        folder = shared_folder()
        try:
            stats = os.statvfs(folder)
            if stats.f_bavail * stats.f_frsize < sum(AREA_BYTES.values()):
                return None  # a small /dev/shm (a container's 64 MB): the pipes
            return cls(folder / f"{PREFIX}{os.getpid()}-{next(_serial)}", AREA_BYTES, create=True)
        except OSError:
            return None

    def array(self, area: str, placed: Placed) -> np.ndarray:
        """The uint8 array `placed` in `area` (a view of the shared memory: read it before giving it back)."""
        count = math.prod(placed.shape)
        return np.frombuffer(self.map, np.uint8, count, self.bases[area] + placed.offset).reshape(placed.shape)

    def place(self, area: str, shape: tuple[int, ...]) -> tuple[Placed, np.ndarray] | None:
        """Room for a uint8 array of `shape` in `area`: (where, a view to write it into), or None when
        there is none now (`busy` says whether some will come back) or ever."""
        size = math.prod(shape)
        if self.unusable:
            return None
        offset = self.rings[area].take(size)
        if offset is None:
            return None
        end = offset + size
        if end > self.reserved[area]:
            try:
                os.posix_fallocate(self.fd, self.bases[area], end)
            except OSError:
                self.unusable = True
                self.rings[area].held.pop()  # the range just taken
                return None
            self.reserved[area] = end
        placed = Placed(offset, tuple(shape))
        return placed, self.array(area, placed)

    def busy(self, area: str) -> bool:
        """Whether ranges of `area` are out (so `place` may find room once they come back)."""
        return bool(self.rings[area].held) and not self.unusable

    def give_back(self, area: str, offset: int) -> None:
        self.rings[area].give_back(offset)

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.unlink()
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still alive somewhere; the mapping goes with the process
        try:
            os.close(self.fd)
        except OSError:
            pass


def shared_folder() -> Path:
    folder = Path("/dev/shm")
    return folder if folder.is_dir() and os.access(folder, os.W_OK) else Path(tempfile.gettempdir())


def remove_stale_regions() -> list[Path]:
    """Remove the shared files of main processes that are gone (killed before their workers had mapped them)."""
    removed = []
    for path in shared_folder().glob(f"{PREFIX}*-*"):
        try:
            owner = int(path.name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not process_alive(owner):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed
