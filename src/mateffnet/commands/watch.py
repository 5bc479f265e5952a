"""`mateffnet watch`: live two-stream recognition from a camera, a network stream or a file at its real rate.

A reader thread decodes the source as it comes (`data.decode.open_source` / `live_frames`) into a ring
of the last `window` seconds of frames. Every `every` seconds of wall time the main thread scores what
the ring holds as one window (`engine.windows.WindowScorer`: the path predict and timeline use; flow of a
frame pair computed once and reused by later predictions) and prints the top classes with the time in
the source and the latency (from the arrival of the window's newest frame to the printed answer).

Falling behind is never allowed to grow: when the reader lags the source's clock by more than
`max_lag` seconds it skips the conversion of frames (they are dropped, not queued), and when scoring
takes longer than `every`, the ticks that passed are skipped and the next prediction takes the newest
frames. Both are counted, said on stderr when they happen, and summed up at the end. Flow across a
dropped frame spans two frame intervals.

Ends: the source's end (a file, a network stream that closes) stops cleanly (status 0) after a last
prediction; a source that cannot be opened, breaks, or sends nothing for `timeout` seconds gives one line
and status 1. With `reconnect` N a live source that ends or breaks is reopened, up to N times in all (FFmpeg
cannot tell a server that was killed from one that finished: both close the connection); the source's times
go on from where they stopped and no window spans two connections; a source that cannot be reopened gives
one line and status 1.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mateffnet.io.decode import VideoDecodeError, is_live_source, live_frames, open_source, parse_size, source_rate
from mateffnet.engine.windows import FrameRing, Window, WindowScorer
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_text
from mateffnet.models import TwoStreamNet


@dataclass
class WatchOptions:
    window: float = 4.0  # seconds of frames each prediction looks at
    every: float = 1.0  # seconds (wall clock) between predictions
    segments: int = 8
    topk: int = 3
    realtime: bool = False  # a file: play it at its real rate (needed for files)
    reconnect: int = 0  # network sources: reopen this many times after a break
    timeout: float = 10.0  # seconds without data before a network source counts as ended
    max_lag: float = 0.5  # seconds behind the source's clock before frames are dropped
    fps: float | None = None  # when the source declares no frame rate
    json: bool = False  # JSON lines on stdout instead of text
    out: str | None = None  # also write the predictions as JSON lines to this file (at the end)
    max_predictions: int | None = None  # stop after this many (for scripts)


@dataclass
class Arrival:
    index: int  # count of kept frames before this one
    time: float  # seconds in the source since its first frame
    wall: float  # time.monotonic() when it was ready
    frames: dict  # frame size → uint8 (H, W, 3)


@dataclass
class WatchSummary:
    predictions: list[dict] = field(default_factory=list)
    frames: int = 0  # decoded
    dropped_decode: int = 0  # skipped by the reader (it lagged the source)
    unscored: int = 0  # left the ring without being in any prediction
    skipped_ticks: int = 0  # predictions not made because the previous one took too long
    error: str | None = None

    def line(self) -> str:
        latencies = [p["latency"] for p in self.predictions]
        latency = (f"latency median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s"
                   if latencies else "no latency measured")
        return (f"done: {len(self.predictions)} predictions, {self.frames} frames decoded, {latency}; "
                f"{self.dropped_decode} frames dropped by the reader, {self.unscored} never scored, "
                f"{self.skipped_ticks} late predictions skipped")


class SourceReader(threading.Thread):
    """Decodes the source into `ring` (a deque of `Arrival`s) until it ends, breaks or `stop` is set."""

    def __init__(self, source: str, sizes: list, capacity: int, options: WatchOptions, opened):
        super().__init__(daemon=True, name="watch-reader")
        self.source, self.sizes, self.options = source, sizes, options
        self.ring: deque[Arrival] = deque(maxlen=capacity)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None
        self.frames = self.dropped = self.kept = 0
        self.evicted_unscored = 0
        self.scored_up_to = -1  # newest kept index that a prediction used
        self.clock = 0.0  # the source's time of the first frame of this connection (later ones go on from the last)
        self.rate = options.fps or source_rate(opened[1]) or 25.0
        self._opened = opened  # (container, stream) opened by the caller (so a bad source fails at once)

    def run(self) -> None:
        try:
            attempts = 0
            while not self.stop.is_set():
                problem = None
                try:
                    self._read(*self._opened)  # returns when the source ends
                except VideoDecodeError as error:
                    problem = str(error)
                if self.stop.is_set() or attempts >= self.options.reconnect or not is_live_source(self.source):
                    self.error = problem
                    return
                self._opened[0].close()
                self._opened = None
                self._start_over()
                while True:  # reopen: a live source that ends or breaks may come back (a restarted server, camera)
                    attempts += 1
                    what = problem or f"{self.source}: the source ended"
                    print(f"mateffnet watch: {what}; reconnecting ({attempts}/{self.options.reconnect})", file=sys.stderr)
                    time.sleep(1.0)
                    try:
                        self._opened = open_source(self.source, self.options.timeout)
                        break
                    except VideoDecodeError as again:
                        problem = str(again)
                        if attempts >= self.options.reconnect or self.stop.is_set():
                            self.error = f"{problem} (after {attempts} reconnection attempt{'s' * (attempts > 1)})"
                            return
        finally:
            if self._opened is not None:
                self._opened[0].close()
            self.ended.set()

    def _start_over(self) -> None:
        """After a break: no window spans two connections, and the source's clock goes on from where it stopped."""
        with self.lock:
            self.evicted_unscored += sum(arrival.index > self.scored_up_to for arrival in self.ring)
            if self.ring:
                self.clock = self.ring[-1].time + 1.0 / max(1.0, self.rate)
            self.ring.clear()

    def _read(self, container, stream) -> None:
        options = self.options
        paced = not is_live_source(self.source)  # a file plays at its real rate; a live source paces itself
        start_wall = first_time = None

        def keep(moment: float) -> bool:
            nonlocal start_wall, first_time
            now = time.monotonic()
            if start_wall is None:
                start_wall, first_time = now, moment
            due = start_wall + (moment - first_time)
            if paced and due > now:
                time.sleep(due - now)
                return True
            return now - due <= options.max_lag

        size = parse_size(str(self.sizes[0])) if self.sizes[0] is not None else None
        for moment, image in live_frames(container, stream, size, keep):
            if self.stop.is_set():
                return
            self.frames += 1
            if image is None:
                self.dropped += 1
                continue
            frames = {self.sizes[0]: image}
            for other in self.sizes[1:]:  # streams trained at other frame sizes: resize the decoded frame
                frames[other] = _resized(image, other)
            with self.lock:
                if len(self.ring) == self.ring.maxlen and self.ring[0].index > self.scored_up_to:
                    self.evicted_unscored += 1
                self.ring.append(Arrival(self.kept, self.clock + moment - first_time, time.monotonic(), frames))
            self.kept += 1

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.ring)


def _resized(image: np.ndarray, size) -> np.ndarray:
    import cv2

    from mateffnet.io.decode import output_size

    width, height = output_size(image.shape[1], image.shape[0], parse_size(str(size)) if size is not None else None)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def watch(source: str, model: TwoStreamNet, options: WatchOptions, device: torch.device,
          emit=print) -> WatchSummary:
    """Watch `source` until it ends (or `max_predictions`), emitting one line per prediction; see the module."""
    if not is_live_source(source) and not options.realtime:
        raise MateffnetError(f"{source}: a file is watched at its real rate: add --realtime "
                             "(or use mateffnet timeline to go through it as fast as possible)")
    if options.window <= 0 or options.every <= 0:
        raise MateffnetError(f"--window and --every must be positive seconds, got {options.window} and {options.every}")
    names = model.class_names or [str(i) for i in range(next(iter(model.streams.values())).config.num_classes)]
    scorer = WindowScorer(model, options.segments, 1, device)
    container, stream = open_source(source, options.timeout)
    fps = options.fps or source_rate(stream)
    if fps <= 0:
        container.close()
        raise MateffnetError(f"{source}: the source declares no frame rate; give --fps")
    capacity = max(2, round(options.window * fps))
    _warm_up(scorer, stream, capacity)
    reader = SourceReader(source, scorer.sizes, capacity, options, (container, stream))
    summary = WatchSummary()
    reader.start()
    try:
        next_tick = None
        last_scored = -1
        while True:
            ended = reader.ended.is_set()
            arrivals = reader.snapshot()
            if next_tick is None:
                if arrivals and (len(arrivals) >= capacity or ended):
                    next_tick = time.monotonic()
                elif ended:
                    break
                else:
                    time.sleep(0.01)
                    continue
            now = time.monotonic()
            if now < next_tick and not ended:
                time.sleep(min(next_tick - now, 0.05))
                continue
            if now - next_tick > options.every:  # the last prediction took longer than a tick
                missed = int((now - next_tick) // options.every)
                summary.skipped_ticks += missed
                print(f"mateffnet watch: inference is slower than --every {options.every:g} s: "
                      f"{missed} prediction(s) skipped", file=sys.stderr)
                next_tick += missed * options.every
            if arrivals and arrivals[-1].index != last_scored and len(arrivals) >= 2:
                record = _predict(arrivals, scorer, names, options.topk)
                last_scored = arrivals[-1].index
                with reader.lock:
                    reader.scored_up_to = last_scored
                summary.predictions.append(record)
                emit(json.dumps(record) if options.json else _format(record))
                if options.max_predictions and len(summary.predictions) >= options.max_predictions:
                    break
            if ended:
                break
            next_tick += options.every
    finally:
        reader.stop.set()
        reader.join(timeout=options.timeout + 2)
    summary.frames, summary.dropped_decode = reader.frames, reader.dropped
    summary.unscored, summary.error = reader.evicted_unscored, reader.error
    if options.out:
        atomic_write_text(options.out, "".join(json.dumps(p) + "\n" for p in summary.predictions))
    return summary


def _warm_up(scorer: WindowScorer, stream, capacity: int) -> None:
    """Score one window of blank frames before the source plays, so that the first prediction's latency is not
    the one-time cost of the first forward pass (kernel selection, lazy imports)."""
    from mateffnet.io.decode import output_size

    ring = FrameRing(capacity)
    sizes = scorer.sizes
    width, height = stream.codec_context.width, stream.codec_context.height
    for _ in range(capacity):
        ring.push({size: np.zeros(output_size(width, height, parse_size(str(size)) if size is not None else None)[::-1]
                                  + (3,), np.uint8) for size in sizes})
    scorer.score([Window(0, capacity)], ring)
    scorer.forget_before(capacity)


def _predict(arrivals: list[Arrival], scorer: WindowScorer, names: list[str], k: int) -> dict:
    from mateffnet.commands.timeline import top_entries

    ring = FrameRing(len(arrivals), first_index=arrivals[0].index)
    for arrival in arrivals:
        ring.push(arrival.frames)
    scores = scorer.score([Window(arrivals[0].index, len(arrivals))], ring)
    scorer.forget_before(arrivals[0].index + 1)
    record = {"time": round(arrivals[-1].time, 3), "start": round(arrivals[0].time, 3), "frames": len(arrivals),
              "wall": round(time.time(), 3),
              "latency": round(time.monotonic() - arrivals[-1].wall, 4)}
    for stream in ("fused", "rgb", "flow"):
        if stream in scores.probabilities:
            record[stream] = top_entries(scores.probabilities[stream][0], names, k)
    return record


def _format(record: dict) -> str:
    parts = [f"{s} {record[s][0]['label']} {100 * record[s][0]['prob']:.0f}%" for s in ("rgb", "flow") if s in record]
    fused = record["fused"][0]
    return (f"[{record['time']:8.2f} s] {fused['label']} {100 * fused['prob']:.1f}%  ({', '.join(parts)})  "
            f"latency {record['latency']:.3f} s")


def run_watch(source: str, model_dir: str | Path, options: WatchOptions, device: str = "auto") -> int:
    """The command: load the model, watch, print the summary on stderr; exit status 1 on a broken source."""
    from mateffnet.runtime import resolve_device

    resolved = resolve_device(device)
    model = TwoStreamNet.from_pretrained(model_dir, map_location=resolved)
    summary = watch(source, model, options, resolved, emit=lambda line: print(line, flush=True))
    print(summary.line(), file=sys.stderr)
    if summary.error:
        print(f"mateffnet watch: error: {summary.error}", file=sys.stderr)
        return 1
    return 0
