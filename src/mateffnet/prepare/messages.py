"""What the main process and the worker processes of `mateffnet prepare` send each other.

Main → worker (its inbox queue): `Video` (pack this one), `Flows` (quantised flow computed for it),
`FramesTaken` (a range of shared frames copied out), or None (stop). Worker → main (its result pipe):
`Ready`, `Frames`, `FramesEnd` and `FlowsTaken` (when the main process computes the flow), `Done` (the
video's outcome). The arrays of `Frames` and `Flows` travel in the worker's shared memory
(`prepare.shared`; the message holds a `Placed`), or in the message where that has no room.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mateffnet.io.annotations import VideoItem


@dataclass(frozen=True)
class Placed:
    """Where a uint8 array lies in an area of a worker's shared memory."""

    offset: int  # bytes from the area's start
    shape: tuple[int, ...]


@dataclass
class Video:
    index: int  # position of the video in the job's to-do list
    item: VideoItem


@dataclass
class Flows:
    index: int
    pairs: list[int]  # flow k goes from frame k to frame k + 1
    quantized: np.ndarray | Placed  # uint8 (len(pairs), 2, H, W), or where it lies in the shared "flows" area


@dataclass
class Ready:
    worker_id: int


@dataclass
class Frames:
    worker_id: int
    index: int
    first: int  # number of the first frame of `frames` in the video
    frames: np.ndarray | Placed  # uint8 (n, H, W, 3), decoded and resized, or where in the shared "frames" area


@dataclass
class FramesTaken:
    offset: int  # the main process has copied out the frames placed there: the range is free again


@dataclass
class FlowsTaken:
    worker_id: int
    offset: int  # the worker has read the flow placed there: the range is free again


@dataclass
class FramesEnd:
    worker_id: int
    index: int
    count: int  # frames the video has, all sent


@dataclass
class Done:
    worker_id: int
    index: int
    outcome: dict  # {"status": "done", "frames", "flows", "bytes"} or {"status": "failed", "reason", "detail"}
