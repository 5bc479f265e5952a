"""The worker processes of `mateffnet prepare`, and `pack_all`, which hands the videos to them (or packs
them in this process with `workers=0`) and yields each outcome as it comes.

Each worker has its own channels: an inbox queue (main → worker) and a result pipe (worker → main), and, for
flow across videos, its own shared memory for frames and flow (`shared`), so the main process always knows
which video each worker holds, and a worker that dies (even in the middle of a write) breaks only its own
channels: its video is reported failed and a new worker, with new channels, takes over.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections import deque
import os
import shutil
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mateffnet.errors import MateffnetError
from mateffnet.fileio import remove_temporaries
from mateffnet.io.annotations import VideoItem
from mateffnet.io.store import store_path
from mateffnet.prepare.batcher import FlowBatcher
from mateffnet.prepare.messages import Done, Flows, FlowsTaken, Frames, FramesEnd, FramesTaken, Placed, Ready, Video
from mateffnet.prepare.options import CPU_ONLY_FLOW_METHODS, PrepareOptions
from mateffnet.prepare.pack import failure, pack_video
from mateffnet.prepare.processes import worker_context
from mateffnet.prepare.shared import SharedRegion, remove_stale_regions
from mateffnet.prepare.worker import worker_main
from mateffnet.runtime import cores_per_process


def pack_all(todo: list[VideoItem], store: Path, options: PrepareOptions, device: str, progress: bool):
    """Yield (item, outcome) as videos finish; outcome has status done/failed."""
    workers = options.workers if options.workers is not None else cores_per_process()
    if options.flow_method in CPU_ONLY_FLOW_METHODS:
        device = "cpu"  # no GPU memory (or CUDA context per worker) for a method that cannot use it
    across = options.batch_across_videos
    if across is None:  # flow on a GPU: big batches of pairs from several videos in this process
        across = device.startswith("cuda")
    across = across and options.flow_method != "none" and workers > 0
    remove_dead_forkserver_folders()  # left in the temporary directory by runs killed with kill -9
    if across:
        remove_stale_regions()  # shared memory of runs killed with kill -9 while starting workers
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.05)
    started, pairs = time.monotonic(), 0
    try:
        if workers == 0:
            results = _run_in_process(todo, store, options, device)
        else:
            results = Pool(todo, store, options, device, workers, across).results()
        for item, outcome in results:
            pairs += outcome.get("flows", 0)
            bar.update(1)
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.set_postfix(pairs_per_s=f"{pairs / elapsed:.0f}", refresh=False)
            yield item, outcome
    finally:
        bar.close()


def _run_in_process(todo, store, options, device):
    for item in todo:
        try:
            path = store_path(store, item.video_id)
            outcome = {"status": "done", **pack_video(item, path, options, device)}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            outcome = failure(error, path)
        yield item, outcome


def remove_dead_forkserver_folders(older_than: float = 5.0) -> list[Path]:
    """Remove the folders multiprocessing's forkserver leaves in the temporary directory when its main process is
    killed (`pymp-*` holding only `listener-*` sockets): only ours, older than `older_than` seconds, and only when
    no process holds any of their sockets any more. Linux only: whether a socket is held is read from
    /proc/net/unix (never by connecting: a live forkserver dies of a connection that sends it nothing)."""
    held = _held_unix_sockets()
    if held is None:
        return []
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("pymp-*"):
        try:
            entries = list(folder.iterdir())
            stale = folder.stat().st_uid == os.getuid() and time.time() - folder.stat().st_mtime > older_than
        except OSError:
            continue
        if not stale or not entries or not all(e.name.startswith("listener-") and e.is_socket() for e in entries):
            continue
        if any(str(entry) in held for entry in entries):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _held_unix_sockets() -> set[str] | None:
    """The paths of the Unix sockets some process has open (None where /proc/net/unix cannot be read)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return None
    return {fields[7] for fields in (line.split() for line in lines) if len(fields) >= 8}


class Pool:
    """Worker processes, each with its own channels: an inbox queue (main → worker) and a result
    pipe (worker → main). The main process always knows which video each worker holds, and a
    worker that dies (even in the middle of a write) breaks only its own channels: its video is
    reported failed and a new worker takes over."""

    def __init__(self, todo, store, options, device, workers, across):
        self.todo, self.store, self.options, self.device, self.across = list(todo), str(store), options, device, across
        self.size = min(workers, len(self.todo)) or 1
        self.context = worker_context()
        self.workers: dict[int, WorkerProcess] = {}
        self.next_id = 0
        self.startup_failures = 0
        self.batcher = FlowBatcher(options, device, self.send) if across else None

    def results(self):
        pending = list(range(len(self.todo)))[::-1]
        finished = 0
        last_message = next_reap = time.monotonic()
        try:
            for _ in range(self.size):
                self._start_worker()
            if self.batcher is not None and self.device.startswith("cuda"):
                torch.zeros((), device=self.device)  # the CUDA context, while the workers start
            while finished < len(self.todo):
                for worker in list(self.workers.values()):
                    if worker.ready and worker.holding is None and pending:
                        self._assign(worker, pending.pop())
                by_connection = {w.results: w for w in self.workers.values() if not w.closed}
                timeout = 0.05
                if self.batcher is not None and (self.batcher.busy or self.batcher.ended):
                    timeout = 0.002 if self.batcher.busy else 0.01  # a batch to hand out, or one to flush soon
                exits = {w.process.sentinel: w for w in self.workers.values()}  # ready once the process has ended
                ready = wait(list(by_connection) + list(exits), timeout=timeout)
                for connection in ready:
                    worker = by_connection.get(connection)
                    if worker is None:
                        continue  # an exit: reaped below
                    try:
                        message = connection.recv()
                    except (EOFError, OSError):
                        worker.closed = True  # the worker exited; reaped below
                        continue
                    except Exception:  # a message cut off by the worker's death
                        worker.closed = True
                        worker.process.kill()
                        continue
                    last_message = time.monotonic()
                    outcome = self._handle(worker, message)
                    if outcome is not None:
                        finished += 1
                        yield outcome
                if self.batcher:
                    self.batcher.flush_due()
                    self.batcher.deliver()
                if not ready and self.batcher and time.monotonic() - last_message > 1.0:
                    self.batcher.flush_all()  # safety net; full batches and end_frames normally decide
                # checking every worker's exit status costs a system call each: only when one has ended
                if any(r in exits for r in ready) or any(w.closed for w in self.workers.values()) \
                        or time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + 0.5
                    for outcome in self._reap_dead():
                        finished += 1
                        yield outcome
        finally:
            self._stop()

    def _handle(self, worker: WorkerProcess, message: Ready | Done | Frames | FramesEnd | FlowsTaken):
        if isinstance(message, Ready):
            worker.ready = True
            self.startup_failures = 0
            if worker.region is not None:
                worker.region.unlink()  # the worker has mapped it: the name is not needed any more
        elif isinstance(message, Done):
            worker.holding = None
            worker.waiting.clear()
            if self.batcher:
                self.batcher.forget(message.index)
            return self.todo[message.index], message.outcome
        elif isinstance(message, Frames):
            if isinstance(message.frames, Placed):
                self.batcher.add_frames(worker.id, message.index, message.first, worker.region.array("frames", message.frames))
                worker.inbox.put(FramesTaken(message.frames.offset))  # add_frames has copied them
            else:
                self.batcher.add_frames(worker.id, message.index, message.first, message.frames)
        elif isinstance(message, FramesEnd):
            self.batcher.end_frames(message.index)
        elif isinstance(message, FlowsTaken):
            worker.region.give_back("flows", message.offset)
            self._send_waiting(worker)
        return None

    def _assign(self, worker: WorkerProcess, index: int) -> None:
        worker.holding = index
        worker.inbox.put(Video(index, self.todo[index]))

    def send(self, worker_id: int, index: int, pairs: list[int], codes, positions: list[int]) -> None:
        """Send flow codes[positions] (numbered `pairs`) to the worker holding video `index`, if it still does:
        through its shared memory (after the flow already waiting for room there), else in the message."""
        worker = self.workers.get(worker_id)
        if worker is not None and worker.holding == index:
            worker.waiting.append((index, pairs, codes, positions))
            self._send_waiting(worker)

    def _send_waiting(self, worker: WorkerProcess) -> None:
        while worker.waiting:
            index, pairs, codes, positions = worker.waiting[0]
            if worker.holding != index:  # the video failed meanwhile
                worker.waiting.popleft()
                continue
            room = worker.region.place("flows", (len(positions), *codes.shape[1:])) if worker.region else None
            if room is not None:
                placed, view = room
                _gather(codes, positions, view)
                message = Flows(index, pairs, placed)
            elif worker.region is not None and worker.region.busy("flows"):
                return  # room comes back with the worker's next FlowsTaken
            else:
                message = Flows(index, pairs, codes[positions])
            worker.waiting.popleft()
            worker.inbox.put(message)

    def _start_worker(self) -> None:
        worker_id, self.next_id = self.next_id, self.next_id + 1
        inbox = self.context.Queue()
        inbox.cancel_join_thread()  # never wait at exit on a dead worker's full pipe
        receive_end, send_end = self.context.Pipe(duplex=False)
        region = SharedRegion.create() if self.across else None
        process = self.context.Process(
            target=worker_main,
            args=(worker_id, inbox, send_end, self.store, self.options, self.device, self.across, os.getpid(),
                  region and (region.path, region.sizes)),
            name=f"mateffnet-prepare-{worker_id}",
            daemon=True,
        )
        process.start()
        send_end.close()  # only the worker writes: its death closes the pipe
        self.workers[worker_id] = WorkerProcess(worker_id, process, inbox, receive_end, region)

    def _reap_dead(self):
        for worker in list(self.workers.values()):
            if worker.process.exitcode is None or (not worker.closed and worker.results.poll()):
                continue  # alive, or messages left to read first
            del self.workers[worker.id]
            worker.close()
            if not worker.ready:
                self.startup_failures += 1
                if self.startup_failures >= 3:
                    raise MateffnetError(
                        f"prepare worker processes die while starting (exit status {worker.process.exitcode}); "
                        "run with --workers 0 to see why"
                    )
            self._start_worker()
            index = worker.holding
            if index is not None:
                if self.batcher:
                    self.batcher.forget(index)
                remove_temporaries(store_path(self.store, self.todo[index].video_id))
                code = worker.process.exitcode
                how = f"signal {-code}" if code < 0 else f"exit status {code}"
                detail = f"the worker process decoding it died ({how}); the decoder probably crashed on this file"
                yield self.todo[index], {"status": "failed", "reason": "crashed", "detail": detail}

    def _stop(self) -> None:
        for worker in self.workers.values():
            try:
                worker.inbox.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.close()


def _gather(rows: np.ndarray, positions: list[int], out: np.ndarray) -> None:
    """out[:] = rows[positions], a run of consecutive positions at a time (a copy is faster than numpy's take)."""
    start = 0
    while start < len(positions):
        stop = start + 1
        while stop < len(positions) and positions[stop] == positions[stop - 1] + 1:
            stop += 1
        np.copyto(out[start:stop], rows[positions[start] : positions[stop - 1] + 1])
        start = stop


@dataclasses.dataclass(eq=False)
class WorkerProcess:
    id: int
    process: multiprocessing.Process
    inbox: object  # multiprocessing Queue, main → worker
    results: object  # multiprocessing Connection, worker → main
    region: SharedRegion | None = None  # its shared memory (flow across videos)
    ready: bool = False
    closed: bool = False
    holding: int | None = None  # index of the video it works on
    waiting: deque = dataclasses.field(default_factory=deque)  # flow for it waiting for room in its shared memory

    def close(self) -> None:
        self.results.close()
        self.inbox.close()
        if self.region is not None:
            self.region.close()
