"""The packed per-video file: every RGB frame (JPEG) and every flow field (JPEG or LZ4, `flowcodec`) of one video, in one
file with an index, so one frame or one flow stack is read with a seek instead of opening
hundreds of small files.

Layout (integers little-endian)::

    b"MFVPACK1"                         magic + format version
    JPEG images                         in the order they were written
    meta                                UTF-8 JSON: sizes, fps, frame/flow counts, flow method and bound, source
    index                               int64 (B, 2): (offset, length) of image b; rows 0..N-1 are RGB
                                        frames 0..N-1, then rows N+2k and N+2k+1 are flow k's x and y
    footer (40 bytes)                   meta offset u64, meta length u64, B u64, crc32(meta+index) u32,
                                        crc32(images) u32, b"MFVEND01"

Flow k goes from frame k to frame k+1 (0-based), so a video of N frames has N-1 flows. Flow images
are the TSN quantisation of each direction, q = round(255·(v+bound)/(2·bound)), stored in the codec
that meta["flow"]["codec"] names (`mateffnet.io.flowcodec`; files without the key hold JPEG).

Opening a file checks the magic, the footer, that the sizes add up to the file size and the
checksum of meta+index, so a half-written or truncated file is rejected; `verify(deep=True)` also
checks the images' checksum. Files are written under a temporary name and renamed when complete.

Damaged files: meta["image_crc32"] holds the CRC-32 of every image in index order, and every read
checks the images it returns, so a flipped byte inside a stored JPEG is a `StoreError` naming the
file, the video, the image and the fix (`mateffnet prepare ... --verify` redoes damaged files)
instead of an image decoded with unnamed "Corrupt JPEG data" warnings. Files written before this
key existed still read (their images are then checked only by `verify(deep=True)`).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mateffnet.io.flowcodec import FLOW_CODECS, decode_flow_planes
from mateffnet.io.jpeg import Region, decode_jpegs
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path

MAGIC = b"MFVPACK1"
END_MAGIC = b"MFVEND01"
FOOTER = struct.Struct("<QQQII8s")
FORMAT_VERSION = 1
SUFFIX = ".mfv"
STORE_SETTINGS = "store.json"  # in a store's folder: how `mateffnet prepare` made its files
# Neighbouring images closer than this are fetched with one read (a flow stack is one read).
MERGE_GAP = 256 * 1024


REDO_HINT = "redo it with mateffnet prepare (the same arguments) and --verify"


class StoreError(MateffnetError):
    def __init__(self, path: str | os.PathLike, problem: str | None = None):
        # StoreError(message) too: how torch's DataLoader re-raises a worker's exception
        self.path, self.problem = str(path), problem
        super().__init__(str(path) if problem is None else f"{path}: bad packed video file: {problem}")


def store_path(store: str | os.PathLike, video_id: str) -> Path:
    """Where the packed file of `video_id` lives in the store folder `store`: always inside it (an id
    that is absolute, empty or has a '..' or '.' part is refused with one line naming it)."""
    parts = video_id.split("/")
    if not video_id or video_id.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise MateffnetError(f"video id {video_id!r} would put its packed file outside the store {store}; refused")
    return Path(store) / f"{video_id}{SUFFIX}"


class PackedVideoWriter:
    """Writes one packed video; images may be added in any order, the file appears on `finish`.

    with PackedVideoWriter(path) as writer:
        writer.add_rgb(0, jpeg0); ...; writer.add_flow(0, jpeg_x0, jpeg_y0); ...
        writer.finish({"width": ..., "height": ..., ...})

    Leaving the block without `finish` (or with an exception) deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._file = open(self._tmp, "wb")
        self._file.write(MAGIC)
        self._offset = len(MAGIC)
        self._crc = 0
        self._rgb: dict[int, tuple[int, int]] = {}
        self._flow: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._crc_at: dict[int, int] = {}  # offset → CRC-32 of the image written there
        self._done = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._done:
            self.abort()

    def add_rgb(self, index: int, jpeg: bytes) -> None:
        self._rgb[int(index)] = self._write(jpeg)

    def add_flow(self, index: int, jpeg_x: bytes, jpeg_y: bytes) -> None:
        self._flow[int(index)] = (self._write(jpeg_x), self._write(jpeg_y))

    @property
    def num_frames(self) -> int:
        return len(self._rgb)

    def finish(self, meta: dict) -> dict:
        """Write meta, index and footer, and move the file into place. Returns the full meta."""
        num_frames, num_flows = len(self._rgb), len(self._flow)
        for name, entries in (("RGB frame", self._rgb), ("flow", self._flow)):
            if sorted(entries) != list(range(len(entries))):
                gaps = sorted(set(range(max(entries, default=-1) + 1)) - set(entries))
                self.abort()
                raise ValueError(f"{self.path}: {name} {gaps[:3]} missing; cannot finish")
        meta = {"format": "mateffnet packed video", "version": FORMAT_VERSION, **meta}
        meta.update(num_frames=num_frames, num_flows=num_flows)
        index = np.zeros((num_frames + 2 * num_flows, 2), dtype="<i8")
        for i, entry in self._rgb.items():
            index[i] = entry
        for k, (x, y) in self._flow.items():
            index[num_frames + 2 * k] = x
            index[num_frames + 2 * k + 1] = y
        meta["image_crc32"] = [self._crc_at[int(offset)] for offset in index[:, 0]]
        meta_bytes = json.dumps(meta, sort_keys=True).encode("utf-8")
        index_bytes = index.tobytes()
        footer = FOOTER.pack(
            self._offset, len(meta_bytes), len(index), zlib.crc32(index_bytes, zlib.crc32(meta_bytes)), self._crc, END_MAGIC
        )
        try:
            self._file.write(meta_bytes + index_bytes + footer)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._atomic.__exit__(None, None, None)
        except BaseException as error:
            self._done = True
            self._file.close()
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        self._done = True
        return meta

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at `path`."""
        if self._done:
            return
        self._done = True
        self._file.close()
        error = RuntimeError("aborted")
        self._atomic.__exit__(RuntimeError, error, None)

    def _write(self, data: bytes) -> tuple[int, int]:
        if self._done:
            raise ValueError(f"{self.path}: writer already closed")
        self._file.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._crc_at[self._offset] = zlib.crc32(data)
        entry = (self._offset, len(data))
        self._offset += len(data)
        return entry


class PackedVideo:
    """Read access to one packed video file (no file handle is kept: safe to pickle and fork).

    `num_frames`, `num_flows`, `width`, `height`, `fps`, `flow_bound` and `flow_codec` (None without
    flow), `meta`; `rgb_jpegs(frames)` / `flow_blobs(flows)` give the stored bytes (RGB: JPEG; flow:
    `flow_codec`), `read_rgb` / `read_flow` the decoded uint8 images.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size < len(MAGIC) + FOOTER.size:
                    raise StoreError(path, f"only {size} bytes (truncated)")
                if os.pread(f.fileno(), len(MAGIC), 0) != MAGIC:
                    raise StoreError(path, "wrong magic (not a mateffnet packed video, or another format version)")
                footer = os.pread(f.fileno(), FOOTER.size, size - FOOTER.size)
                meta_offset, meta_length, count, index_crc, self._payload_crc, end = FOOTER.unpack(footer)
                if end != END_MAGIC:
                    raise StoreError(path, "no footer (truncated or half-written)")
                index_length = 16 * count
                if meta_offset < len(MAGIC) or meta_offset + meta_length + index_length + FOOTER.size != size:
                    raise StoreError(path, "sizes in the footer do not add up to the file size (truncated?)")
                tail = os.pread(f.fileno(), meta_length + index_length, meta_offset)
        except FileNotFoundError:
            raise StoreError(path, "no such file") from None
        except OSError as error:
            raise StoreError(path, f"cannot read ({error.strerror})") from None
        if zlib.crc32(tail) != index_crc:
            raise StoreError(path, "checksum of the index does not match (damaged file)")
        self.meta = json.loads(tail[:meta_length].decode("utf-8"))
        self._index = np.frombuffer(tail, dtype="<i8", offset=meta_length).reshape(count, 2)
        self._payload_end = meta_offset
        self.num_frames = int(self.meta["num_frames"])
        self.num_flows = int(self.meta["num_flows"])
        if count != self.num_frames + 2 * self.num_flows:
            raise StoreError(path, f"index has {count} entries for {self.num_frames} frames and {self.num_flows} flows")
        ends = self._index[:, 0] + self._index[:, 1]
        if count and (self._index[:, 0].min() < len(MAGIC) or ends.max() > meta_offset):
            raise StoreError(path, "index points outside the image data")
        crcs = self.meta.get("image_crc32")
        if crcs is not None and len(crcs) != count:
            raise StoreError(path, f"meta lists {len(crcs)} image checksums for {count} images")
        self._image_crcs = None if crcs is None else np.asarray(crcs, dtype=np.uint32)
        self.width, self.height = int(self.meta["width"]), int(self.meta["height"])
        self.fps = float(self.meta.get("fps") or 0.0)
        flow = self.meta.get("flow") or {}
        self.flow_bound = float(flow["bound"]) if self.num_flows else None
        self.flow_codec = flow.get("codec", "jpeg") if self.num_flows else None
        if self.flow_codec is not None and self.flow_codec not in FLOW_CODECS:
            raise StoreError(path, f"flow codec {self.flow_codec!r} is not one this mateffnet reads ({', '.join(FLOW_CODECS)}); "
                             "upgrade mateffnet")

    def __repr__(self) -> str:
        return f"PackedVideo({str(self.path)!r}, frames={self.num_frames}, flows={self.num_flows}, size={self.width}x{self.height})"

    def verify(self, deep: bool = False) -> None:
        """Raise StoreError unless the file is intact. Opening already checked the structure; `deep`
        also reads every image and checks the checksum."""
        if not deep:
            return
        crc = 0
        with open(self.path, "rb") as f:
            f.seek(len(MAGIC))
            remaining = self._payload_end - len(MAGIC)
            while remaining:
                block = f.read(min(remaining, 1 << 22))
                if not block:
                    raise StoreError(self.path, "image data ends early")
                crc = zlib.crc32(block, crc)
                remaining -= len(block)
        if crc != self._payload_crc:
            raise StoreError(self.path, "checksum of the images does not match (damaged file)")

    def rgb_jpegs(self, frames: Sequence[int]) -> list[torch.Tensor]:
        """JPEG bytes (1-D uint8 tensors) of RGB frames `frames` (0-based)."""
        rows = [self._checked(int(i), self.num_frames, "frame") for i in frames]
        return self._read(rows)

    def flow_blobs(self, flows: Sequence[int]) -> list[torch.Tensor]:
        """Stored bytes (in `flow_codec`) of flows `flows` (0-based), interleaved: x of the first, y of the
        first, x of the second, …"""
        rows = []
        for k in flows:
            k = self._checked(int(k), self.num_flows, "flow")
            rows += [self.num_frames + 2 * k, self.num_frames + 2 * k + 1]
        return self._read(rows)

    def read_rgb(self, frames: Sequence[int], region: Region | None = None, mirror: bool = False,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (n, 3, H, W) RGB frames, or only `region` (top, left, height, width) of them, mirrored
        left-right if `mirror`, written into `out` if given."""
        return decode_jpegs(self.rgb_jpegs(frames), gray=False, region=region, mirror=mirror, out=out)

    def read_flow(self, flows: Sequence[int], region: Region | None = None, mirror: bool = False,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (n, 2, H, W) quantised flows (channel 0 = x, 1 = y), or a region of them as in `read_rgb`
        (mirroring moves pixels only: the x values are not negated here); see `mateffnet.flow.dequantize_flow`."""
        blobs = self.flow_blobs(flows)  # a checksum mismatch is already a StoreError naming the file
        try:
            planes = decode_flow_planes(blobs, self.flow_codec or "jpeg", self.height, self.width, region, mirror, out)
        except MateffnetError as error:
            raise StoreError(self.path, str(error)) from None
        return planes.view(-1, 2, *planes.shape[-2:])

    def _checked(self, i: int, count: int, what: str) -> int:
        if not 0 <= i < count:
            raise IndexError(f"{self.path}: {what} {i} out of range (the video has {count})")
        return i

    def _read(self, rows: list[int]) -> list[torch.Tensor]:
        """Read the images of index rows `rows`, merging neighbouring byte ranges into one read."""
        if not rows:
            return []
        spans = self._index[rows]
        order = np.argsort(spans[:, 0], kind="stable")
        starts = spans[order, 0]
        ends = np.maximum.accumulate(starts + spans[order, 1])
        out: list[torch.Tensor | None] = [None] * len(rows)
        with open(self.path, "rb", buffering=0) as f:
            for group in np.split(order, np.flatnonzero(starts[1:] - ends[:-1] > MERGE_GAP) + 1):
                self._read_group(f, spans[group], group.tolist(), out, rows)
        return out

    def _read_group(self, f, spans: np.ndarray, group: list[int], out: list, rows: list[int]) -> None:
        """Read one byte range holding the images `spans` ((offset, length) rows) and hand them out as `out[group[i]]`
        (numpy slices of one buffer: per image a tenth of slicing a tensor's cost)."""
        start, end = int(spans[:, 0].min()), int((spans[:, 0] + spans[:, 1]).max())
        data = bytearray(end - start)
        if os.preadv(f.fileno(), [data], start) != len(data):
            raise StoreError(self.path, "image data ends early (file truncated after opening?)")
        array, view = np.frombuffer(data, dtype=np.uint8), memoryview(data)
        for g, offset, length in zip(group, (spans[:, 0] - start).tolist(), spans[:, 1].tolist()):
            if self._image_crcs is not None and zlib.crc32(view[offset : offset + length]) != self._image_crcs[rows[g]]:
                raise StoreError(self.path, f"{self._image_name(rows[g])} is damaged (checksum mismatch)")
            out[g] = torch.from_numpy(array[offset : offset + length])

    def _image_name(self, row: int) -> str:
        if row < self.num_frames:
            return f"RGB frame {row}"
        k, axis = divmod(row - self.num_frames, 2)
        return f"flow {k} ({'xy'[axis]})"

