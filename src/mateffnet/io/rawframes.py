"""mmaction2 / TSN "rawframes" folders, read through the same interface as a packed video.

A folder holds `img_%05d.jpg` RGB frames and the quantised flow as grayscale JPEGs named
`flow_x_%05d.jpg` / `flow_y_%05d.jpg` (mmaction2) or `x_%05d.jpg` / `y_%05d.jpg` (TSN, denseflow),
numbered from 1 (mmaction2, TSN) or from 0 (denseflow). The numbering base is detected from the
smallest number present; inside the package frame i and flow k are 0-based as everywhere else
(flow k goes from frame k to frame k+1). The flow bound is not recorded in such folders: the
field's tools use 20 px, the default here.

`pack_rawframes` turns such a folder into a packed file by copying the JPEG bytes (no re-encoding),
for users who already extracted flow and want one file per video instead of hundreds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from mateffnet.config import DEFAULT_BOUND
from mateffnet.io.jpeg import Region, as_tensor, decode_jpegs
from mateffnet.io.store import PackedVideoWriter
from mateffnet.errors import MateffnetError

_NAME = re.compile(r"(img|flow_x|flow_y|x|y)_(\d+)\.(?:jpg|jpeg)", re.IGNORECASE)


class RawFrames:
    """Read access to one rawframes folder; same attributes and methods as `PackedVideo`."""

    def __init__(self, folder: str | os.PathLike, flow_bound: float = DEFAULT_BOUND):
        self.path = Path(folder)
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            raise MateffnetError(f"{folder}: no such rawframes folder") from None
        files: dict[str, dict[int, str]] = {"img": {}, "x": {}, "y": {}}
        for name in names:
            match = _NAME.fullmatch(name)
            if match:
                kind = match.group(1).lower().removeprefix("flow_")
                files[kind][int(match.group(2))] = name
        numbers = [n for kind in files.values() for n in kind]
        if not numbers:
            raise MateffnetError(f"{folder}: no img_/flow_x_/x_ JPEG files (not a rawframes folder)")
        self.base = min(numbers)
        if self.base not in (0, 1):
            raise MateffnetError(f"{folder}: frame numbers start at {self.base}; expected 0 or 1")
        self._rgb = _contiguous(files["img"], self.base, folder, "img_")
        flow_x = _contiguous(files["x"], self.base, folder, "flow x")
        flow_y = _contiguous(files["y"], self.base, folder, "flow y")
        if len(flow_x) != len(flow_y):
            raise MateffnetError(f"{folder}: {len(flow_x)} x-flow files but {len(flow_y)} y-flow files")
        self._flow = list(zip(flow_x, flow_y))
        self.num_frames, self.num_flows = len(self._rgb), len(self._flow)
        first = self.rgb_jpegs([0]) if self.num_frames else self.flow_blobs([0])[:1]
        _, self.height, self.width = decode_jpegs(first, gray=not self.num_frames)[0].shape
        self.fps = 0.0
        self.flow_bound = float(flow_bound) if self.num_flows else None
        self.flow_codec = "jpeg" if self.num_flows else None
        self.meta = {
            "source": {"rawframes": str(self.path), "first_number": self.base},
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "num_flows": self.num_flows,
            "flow": {"method": "unknown (rawframes)", "bound": self.flow_bound} if self.num_flows else None,
        }

    def __repr__(self) -> str:
        return f"RawFrames({str(self.path)!r}, frames={self.num_frames}, flows={self.num_flows}, base={self.base})"

    def rgb_jpegs(self, frames: Sequence[int]) -> list[torch.Tensor]:
        return [self._load(self._rgb[_checked(self, int(i), self.num_frames, "frame")]) for i in frames]

    def flow_blobs(self, flows: Sequence[int]) -> list[torch.Tensor]:
        out = []
        for k in flows:
            x, y = self._flow[_checked(self, int(k), self.num_flows, "flow")]
            out += [self._load(x), self._load(y)]
        return out

    def read_rgb(self, frames: Sequence[int], region: Region | None = None, mirror: bool = False,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        return decode_jpegs(self.rgb_jpegs(frames), gray=False, region=region, mirror=mirror, out=out)

    def read_flow(self, flows: Sequence[int], region: Region | None = None, mirror: bool = False,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        planes = None if out is None else out.view(-1, 1, *out.shape[-2:])
        planes = decode_jpegs(self.flow_blobs(flows), gray=True, region=region, mirror=mirror, out=planes)
        return planes.view(-1, 2, *planes.shape[-2:])

    def _load(self, name: str) -> torch.Tensor:
        with open(self.path / name, "rb") as f:
            return as_tensor(f.read())


def pack_rawframes(folder: str | os.PathLike, path: str | os.PathLike, flow_bound: float = DEFAULT_BOUND) -> dict:
    """Copy a rawframes folder into one packed file at `path` (JPEG bytes unchanged). Returns its meta."""
    frames = RawFrames(folder, flow_bound)
    with PackedVideoWriter(path) as writer:
        for i, blob in enumerate(frames.rgb_jpegs(range(frames.num_frames))):
            writer.add_rgb(i, bytes(blob.numpy()))
        for k in range(frames.num_flows):
            x, y = frames.flow_blobs([k])
            writer.add_flow(k, bytes(x.numpy()), bytes(y.numpy()))
        meta = dict(frames.meta)
        if meta["flow"] is not None:
            meta["flow"] = {**meta["flow"], "codec": "jpeg"}
        return writer.finish(meta)


def _contiguous(numbered: dict[int, str], base: int, folder, what: str) -> list[str]:
    if not numbered:
        return []
    expected = range(base, base + len(numbered))
    if sorted(numbered) != list(expected):
        gap = next(n for n in expected if n not in numbered)
        raise MateffnetError(f"{folder}: {what} files are not numbered {base}..{base + len(numbered) - 1} ({gap} missing)")
    return [numbered[n] for n in expected]


def _checked(frames: RawFrames, i: int, count: int, what: str) -> int:
    if not 0 <= i < count:
        raise IndexError(f"{frames.path}: {what} {i} out of range (the folder has {count})")
    return i
