"""Flow across videos, in the main process: frame pairs of several videos, batched, to the GPU and back."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from mateffnet.prepare import pack
from mateffnet.prepare.options import PrepareOptions

FrameRef = tuple[torch.Tensor, int]  # (a chunk of frames on the device, row)


class FlowBatcher:
    """Main-process side of flow across videos: each chunk of frames goes to the device as it arrives;
    frame pairs of several videos, grouped by frame size, go to the flow kernel in batches of
    `flow_batch`, and the quantised flow goes back to each video's worker. On a GPU a batch is only
    queued (`IN_FLIGHT` at most): the main process receives the next frames while the GPU computes,
    and `deliver` hands out the batches that have finished. A video whose frames are all in waits for
    its last pairs to fill a batch with other videos' pairs, `WAIT_FOR_FULL` seconds at most (its worker
    idles meanwhile; a partial batch costs the GPU nearly a full one), or until no video is sending
    frames any more."""

    IN_FLIGHT = 2
    WAIT_FOR_FULL = 0.1

    def __init__(self, options: PrepareOptions, device: str,
                 send: Callable[[int, int, list[int], np.ndarray, list[int]], None]):
        """send(worker id, video index, flow numbers, codes, positions): the flow codes[positions] (uint8
        (n, 2, H, W) rows), numbered as given, to the worker, if it still holds that video."""
        self.options, self.device, self.send = options, device, send
        self.buckets: dict[tuple[int, int], list] = {}  # (H, W) → [(index, k, frame k, frame k+1)] as FrameRefs
        self.last_frame: dict[int, FrameRef] = {}
        self.worker_of: dict[int, int] = {}
        self.in_flight: list[tuple[list, object, object]] = []  # (pairs, quantised flow, CUDA event)
        self.size_of: dict[int, tuple[int, int]] = {}
        self.sending: set[int] = set()  # videos whose frames are not all in yet
        self.ended: dict[int, tuple[float, tuple[int, int]]] = {}  # video → (when its frames were all in, its bucket)

    def add_frames(self, worker_id: int, index: int, first: int, frames: np.ndarray) -> None:
        """Frames `first`, … of video `index` (uint8 (n, H, W, 3)); copied before this returns (a view of
        shared memory may be reused once it has)."""
        self.worker_of[index] = worker_id
        chunk = _to_device(frames, self.device)
        self.size_of[index] = frames.shape[1:3]
        self.sending.add(index)
        bucket = self.buckets.setdefault(frames.shape[1:3], [])
        previous = self.last_frame.get(index)
        if previous is not None:
            bucket.append((index, first - 1, previous, (chunk, 0)))
        for j in range(1, len(frames)):
            bucket.append((index, first + j - 1, (chunk, j - 1), (chunk, j)))
        self.last_frame[index] = (chunk, len(frames) - 1)
        while len(bucket) >= self.options.flow_batch:
            self._launch(bucket, self.options.flow_batch)

    def end_frames(self, index: int) -> None:
        """All frames of video `index` are in: its worker now only waits for flow (see `flush_due`)."""
        self.last_frame.pop(index, None)
        self.sending.discard(index)
        key = self.size_of.get(index)
        if key is not None and any(pair[0] == index for pair in self.buckets[key]):
            self.ended[index] = (time.monotonic(), key)
        self.flush_due()

    def flush_due(self) -> None:
        """Launch, in a partial batch if need be, the pairs of the buckets where a video whose frames are all in
        has waited `WAIT_FOR_FULL` seconds, or all pairs once every video has all its frames in."""
        if not self.ended:
            return
        everything = not self.sending
        now = time.monotonic()
        for key in {key for when, key in self.ended.values() if everything or now - when >= self.WAIT_FOR_FULL}:
            bucket = self.buckets[key]
            while bucket:
                self._launch(bucket, self.options.flow_batch)

    def forget(self, index: int) -> None:
        """Drop a finished or failed video's pending pairs."""
        self.last_frame.pop(index, None)
        self.worker_of.pop(index, None)
        self.size_of.pop(index, None)
        self.sending.discard(index)
        self.ended.pop(index, None)
        for bucket in self.buckets.values():
            bucket[:] = [pair for pair in bucket if pair[0] != index]

    def flush_all(self) -> None:
        for bucket in self.buckets.values():
            while bucket:
                self._launch(bucket, self.options.flow_batch)

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    def deliver(self, wait: bool = False) -> None:
        """Send the flow of every finished batch (in order) to its videos' workers; with `wait`,
        wait for the oldest one first."""
        while self.in_flight:
            pairs, quantized, done = self.in_flight[0]
            if done is not None:
                if wait:
                    done.synchronize()
                elif not done.query():
                    return
            self.in_flight.pop(0)
            self._send(pairs, quantized.numpy())
            wait = False

    def _launch(self, bucket: list, count: int) -> None:
        batch, bucket[:] = bucket[:count], bucket[count:]
        for index in {pair[0] for pair in batch} & self.ended.keys():
            if not any(pair[0] == index for pair in bucket):
                del self.ended[index]  # nothing of it waits any more
        rows: dict[tuple[int, int], int] = {}  # (video, frame number) → row: each frame once
        pieces: list[list] = []  # [chunk, start, stop]: the rows, as runs of consecutive rows of a chunk
        first, second = [], []
        for index, k, frame0, frame1 in batch:
            for key, (chunk, row), targets in (((index, k), frame0, first), ((index, k + 1), frame1, second)):
                if key not in rows:
                    rows[key] = len(rows)
                    if pieces and pieces[-1][0] is chunk and pieces[-1][2] == row:
                        pieces[-1][2] += 1
                    else:
                        pieces.append([chunk, row, row + 1])
                targets.append(rows[key])
        runs = [chunk[start:stop] for chunk, start, stop in pieces]
        quantized, done = pack.launch_flow_codes(runs, first, second, self.options, self.device)
        self.in_flight.append(([(index, k) for index, k, _, _ in batch], quantized, done))
        self.deliver(wait=len(self.in_flight) > self.IN_FLIGHT)

    def _send(self, pairs: list[tuple[int, int]], quantized: np.ndarray) -> None:
        by_video: dict[int, list[int]] = {}
        for position, (index, _) in enumerate(pairs):
            by_video.setdefault(index, []).append(position)
        for index, positions in by_video.items():
            worker_id = self.worker_of.get(index)
            if worker_id is not None:  # else the video failed meanwhile
                self.send(worker_id, index, [pairs[p][1] for p in positions], quantized, positions)


def _to_device(frames: np.ndarray, device: str) -> torch.Tensor:
    """A copy of uint8 frames on `device`; to a GPU through pinned memory, without waiting for its queued work."""
    host = torch.from_numpy(frames)
    if device.startswith("cuda"):
        return host.pin_memory().to(device, non_blocking=True)
    return host.clone()
