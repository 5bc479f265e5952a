"""A worker process of `mateffnet prepare`: one video at a time from its inbox, messages about it back.

With flow on the CPU the worker packs the whole video (`pack.pack_video`); with flow across videos it
decodes and writes, sends its frames to the main process and writes the flow that comes back
(`messages` says what goes each way; the frames and the flow through the worker's shared memory,
`prepare.shared`, where it has room).
"""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time

import numpy as np
import torch

from mateffnet.fileio import process_alive
from mateffnet.io.annotations import VideoItem
from mateffnet.io.decode import VideoReader
from mateffnet.io.store import PackedVideoWriter, store_path
from mateffnet.prepare.messages import Done, Flows, FlowsTaken, Frames, FramesEnd, FramesTaken, Placed, Ready, Video
from mateffnet.prepare.options import PrepareOptions
from mateffnet.prepare.pack import check_long_enough, encode_flow, failure, pack_video, rgb_chunks, video_meta
from mateffnet.prepare.shared import SharedRegion


def worker_main(worker_id: int, inbox, results, store: str, options: PrepareOptions, device: str, across: bool,
                main_pid: int | None = None, shared: tuple[str, dict[str, int]] | None = None) -> None:
    """A worker process: one video at a time from `inbox`, messages about it to `results`; it exits as soon as
    the main process `main_pid` is gone (even in the middle of a video). `shared`: (path, area sizes) of its
    shared memory (`prepare.shared`), made by the main process, for flow across videos."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if main_pid is not None:
        threading.Thread(target=_exit_with, args=(main_pid,), name="watch-main-process", daemon=True).start()
    torch.set_num_threads(1)
    region = None
    if shared is not None:
        try:
            region = SharedRegion(*shared)
        except OSError:
            pass  # everything goes through the pipes
    link = _Link(worker_id, inbox, results, region)
    link.send(Ready(worker_id))
    while True:
        message = link.receive()
        if message is None:
            return
        if not isinstance(message, Video):
            link.use_flows(message, None)  # flow of an earlier video that failed: only its memory goes back
            continue
        index, item = message.index, message.item
        path = store_path(store, item.video_id)
        try:
            if across:
                info = _pack_with_remote_flow(worker_id, index, item, path, options, link)
            else:
                info = pack_video(item, path, options, device, threads=1)
            outcome = {"status": "done", **info}
        except Exception as error:
            outcome = failure(error, path)
        link.send(Done(worker_id, index, outcome))


def _exit_with(pid: int) -> None:
    """Wait for process `pid` to end, then end this one. Its half-written file is left for the next run, which
    removes temporaries of dead processes (`fileio.remove_stale_temporaries`)."""
    try:
        handle = os.pidfd_open(pid)  # Linux: readable once the process has exited
    except (AttributeError, OSError):
        while process_alive(pid):
            time.sleep(0.5)
    else:
        select.select([handle], [], [])
    os._exit(1)


class _Link:
    """A worker's channels: its inbox queue, its result pipe and its shared memory (or None). The worker
    exits if the main process is gone (the pipe breaks, or the process is re-parented)."""

    def __init__(self, worker_id: int, inbox, results, region: SharedRegion | None):
        self.worker_id, self.inbox, self.results, self.region, self.parent = worker_id, inbox, results, region, os.getppid()

    def receive(self, block: bool = True):
        """The next message, `FramesTaken` ones handled here."""
        while True:
            message = self._next(block)
            if not isinstance(message, FramesTaken):
                return message
            self.region.give_back("frames", message.offset)

    def _next(self, block: bool):
        while True:
            try:
                return self.inbox.get(timeout=5.0) if block else self.inbox.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                if os.getppid() != self.parent:
                    os._exit(0)

    def send_frames(self, index: int, first: int, chunk: np.ndarray, handle) -> None:
        """The chunk to the main process: through shared memory, waiting for room while some of it is out
        (other messages meanwhile go to `handle`), else in the message."""
        while self.region is not None:
            room = self.region.place("frames", chunk.shape)
            if room is not None:
                placed, view = room
                np.copyto(view, chunk)
                self.send(Frames(self.worker_id, index, first, placed))
                return
            if not self.region.busy("frames"):
                break
            message = self._next(block=True)
            if isinstance(message, FramesTaken):
                self.region.give_back("frames", message.offset)
            else:
                handle(message)
        self.send(Frames(self.worker_id, index, first, chunk))

    def use_flows(self, message, use) -> None:
        """Call use(quantised flow, uint8 (n, 2, H, W)) for a `Flows` message (None: only free it), then give its
        shared memory back; other messages are ignored."""
        if not isinstance(message, Flows):
            return
        placed = isinstance(message.quantized, Placed)
        try:
            if use is not None:
                use(self.region.array("flows", message.quantized) if placed else message.quantized)
        finally:
            if placed:
                self.send(FlowsTaken(self.worker_id, message.quantized.offset))

    def send(self, message) -> None:
        try:
            self.results.send(message)  # blocks while the main process is behind: back-pressure
        except (BrokenPipeError, EOFError, OSError):
            os._exit(0)


def _pack_with_remote_flow(worker_id: int, index: int, item: VideoItem, path, options: PrepareOptions, link: _Link) -> dict:
    """Worker side of flow-in-the-main-process: send frames, receive quantised flow, write the file."""
    flows_needed = None
    received = 0

    def write_flows(message: Flows, codes: np.ndarray) -> None:
        for k, (x, y) in zip(message.pairs, encode_flow(codes, options)):
            writer.add_flow(k, x, y)

    def handle(message) -> None:
        nonlocal received
        if message is None:
            raise KeyboardInterrupt  # the main process is stopping
        if isinstance(message, Flows) and message.index == index:
            link.use_flows(message, lambda codes: write_flows(message, codes))
            received += len(message.pairs)
        else:
            link.use_flows(message, None)  # flow of an earlier, failed video of this worker

    def take_flows(block: bool) -> None:
        while flows_needed is None or received < flows_needed:
            try:
                message = link.receive(block=block)
            except queue.Empty:
                return
            handle(message)

    with VideoReader(item.path, size=options.size, threads=1) as reader, PackedVideoWriter(path) as writer:
        try:
            for first, chunk in rgb_chunks(reader, writer, options):
                link.send_frames(index, first, chunk, handle)
                take_flows(block=False)
            check_long_enough(item, writer.num_frames)
        finally:
            link.send(FramesEnd(worker_id, index, writer.num_frames))
        count = writer.num_frames
        flows_needed = count - 1
        take_flows(block=True)
        writer.finish(video_meta(item, reader, options))
    return {"frames": count, "flows": flows_needed, "bytes": os.path.getsize(path)}
