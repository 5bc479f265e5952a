"""What the main process and the worker processes of `mateffnet prepare` send each other.

Main → worker (its inbox queue): `Video` (pack this one), `Flows` (quantised flow computed for it), or
None (stop). Worker → main (its result pipe): `Ready`, `Frames` and `FramesEnd` (when the main process
computes the flow), `Done` (the video's outcome).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mateffnet.io.annotations import VideoItem


@dataclass
class Video:
    index: int  # position of the video in the job's to-do list
    item: VideoItem


@dataclass
class Flows:
    index: int
    pairs: list[int]  # flow k goes from frame k to frame k + 1
    quantized: np.ndarray  # uint8 (len(pairs), 2, H, W)


@dataclass
class Ready:
    worker_id: int


@dataclass
class Frames:
    worker_id: int
    index: int
    first: int  # number of the first frame of `frames` in the video
    frames: np.ndarray  # uint8 (n, H, W, 3), decoded and resized


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
