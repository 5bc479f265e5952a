"""Recognition over time: windows slid over a stream of frames, scored by both streams in batches.

A window is `length` consecutive frames starting at frame `start` (0-based, presentation order). Each
window is sampled exactly as `predict` samples a whole video (`inference.clip_positions`: T evenly
spaced segments, RGB frames or flow stacks counted from the window's first frame), so a window scores
what `predict` would answer for a video made of those frames.

Frames arrive one at a time (`window_batches`) and live in a `FrameRing` that holds only the frames
one batch of windows spans, `length + (batch - 1) * stride`: memory is bounded by the window, never by
the video. A `WindowScorer` computes each flow field once, when the first window that needs it is
scored, and keeps it only while a later window can still use it (windows overlap), so overlapping
windows never recompute the same frame pair.

The work overlaps so that a GPU does not wait for the host: `frames_ahead` decodes in a background thread
into a bounded queue (memory: the ring plus the queue), each batch's frames go to the device once through
pinned memory without waiting, and `score_frames` queues a batch's flow and networks before it waits for
the previous batch's scores, which it then hands out while the device computes.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mateffnet.io.decode import VideoReader, parse_size
from mateffnet.errors import MateffnetError
from mateffnet.engine.inference import (clip_positions, eval_views, index_to, pair_flows, to_device, unique_pair_frames,
                                        view_probabilities)
from mateffnet.models import StreamNet, TwoStreamNet
from mateffnet.models.twostream import fuse_probabilities

Frames = dict  # frame size key (a stream's `config.frame_size`) → uint8 (H, W, 3) RGB frame


@dataclass(frozen=True)
class Window:
    start: int  # first frame
    length: int  # frames

    @property
    def end(self) -> int:
        """One past the last frame."""
        return self.start + self.length


class FrameRing:
    """The last `capacity` frames of a stream, addressed by their absolute index (0-based)."""

    def __init__(self, capacity: int, first_index: int = 0):
        if capacity < 1:
            raise MateffnetError(f"a frame ring needs room for at least one frame, got {capacity}")
        self._frames: deque[Frames] = deque(maxlen=capacity)
        self.end = first_index  # absolute index of the next frame to arrive

    def push(self, frames: Frames) -> None:
        self._frames.append(frames)
        self.end += 1

    @property
    def start(self) -> int:
        """Absolute index of the oldest frame held."""
        return self.end - len(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def take(self, indices: np.ndarray, size) -> np.ndarray:
        """uint8 (n, H, W, 3) frames `indices` (absolute) at frame size `size`."""
        return np.stack(self.frames(indices, size))

    def frames(self, indices: np.ndarray, size) -> list[np.ndarray]:
        """The uint8 (H, W, 3) frames `indices` (absolute) at frame size `size`, not copied."""
        first = self.start
        if len(indices) and (indices.min() < first or indices.max() >= self.end):
            raise MateffnetError(f"frames {indices.min()}..{indices.max()} asked for, the ring holds {first}..{self.end - 1}")
        return [self._frames[i - first][size] for i in indices.tolist()]


def window_batches(frames: Iterable[Frames], length: int, stride: int, batch: int = 1) -> Iterator[tuple[list[Window], FrameRing]]:
    """Windows of `length` frames every `stride` frames over `frames`, `batch` at a time, each batch with the
    ring that holds their frames (valid until the next batch is asked for).

    Windows end at or before the last frame: up to `stride - 1` frames at the end belong to no window's
    end. A stream shorter than one window gives one window of all its frames (none when it is empty)."""
    if length < 1 or stride < 1 or batch < 1:
        raise MateffnetError(f"window length, stride and batch must be positive, got {length}, {stride}, {batch}")
    ring = FrameRing(length + (batch - 1) * stride)
    pending: list[Window] = []
    next_start = 0
    for item in frames:
        ring.push(item)
        while next_start + length <= ring.end:
            pending.append(Window(next_start, length))
            next_start += stride
            if len(pending) == batch:
                yield pending, ring
                pending = []
    if next_start == 0 and ring.end > 0:  # shorter than one window: the whole stream is one
        pending.append(Window(0, ring.end))
    if pending:
        yield pending, ring


@dataclass
class WindowScores:
    """Scores of a batch of windows: per stream ("rgb", "flow") and "fused", arrays with one row per window."""

    probabilities: dict[str, np.ndarray]  # (B, classes)
    features: dict[str, np.ndarray]  # (B, T, F) pooled backbone features per segment, mean over views (if asked)


@dataclass
class PendingScores:
    """Scores of a batch of windows whose computation may still be queued on the device: on CUDA the tensors are
    pinned host memory that holds the scores once `done` has completed."""

    probabilities: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    done: object = None  # torch.cuda.Event, or None when the scores are final already

    def result(self) -> WindowScores:
        """Wait for the device if need be; the scores as numpy arrays."""
        if self.done is not None:
            self.done.synchronize()
        return WindowScores({k: v.numpy() for k, v in self.probabilities.items()},
                            {k: v.numpy() for k, v in self.features.items()})


class WindowScorer:
    """Scores windows of a `FrameRing` with every stream of `model` (`segments` test segments, `crops` views).

    Flow fields are computed from the ring's frames, or read through `flow_source` (a packed store). Flow fields are cached by their absolute frame index across calls; `forget_before(frame)` drops the
    ones no later window can use. Frames go to the device each once per batch (on CUDA through pinned memory,
    without waiting), and `launch` only queues the work: the host waits for the device only in
    `PendingScores.result`."""

    def __init__(self, model: TwoStreamNet, segments: int, crops: int = 1, device: torch.device = torch.device("cpu"),
                 flow_method: str | None = None, flow_params: dict | None = None, flow_batch: int | None = None,
                 features: bool = False, flow_source=None):
        self.model, self.segments, self.crops, self.device = model, segments, crops, device
        self.flow_method, self.flow_params, self.flow_batch = flow_method, flow_params, flow_batch
        self.features = features
        self.flow_source = flow_source  # flow indices (n,) → stored quantised flows (n, 2, H, W), instead of computing
        self._flows: dict[int, torch.Tensor] = {}
        self.flows_computed = 0  # frame pairs whose flow was computed (each once)

    @property
    def sizes(self) -> list:
        """The frame sizes the streams decode at (one entry per distinct `config.frame_size`)."""
        return list(dict.fromkeys(stream.config.frame_size for stream in self.model.streams.values()))

    def score(self, windows: list[Window], ring: FrameRing) -> WindowScores:
        """The windows' scores (waits for the device)."""
        return self.launch(windows, ring).result()

    @torch.no_grad()
    def launch(self, windows: list[Window], ring: FrameRing) -> PendingScores:
        """Queue the scoring of `windows` on the device; the ring may move on once this returns."""
        probabilities, features = {}, {}
        for name, stream in self.model.streams.items():
            clips = self._clips(stream, windows, ring)  # (B, T, C, H, W)
            views = eval_views(clips.flatten(0, 1), stream, self.crops)  # (V, B·T, C, S, S)
            views = views.unflatten(1, clips.shape[:2]).transpose(0, 1)  # (B, V, T, C, S, S)
            if self.features:
                pooled = pooled_features(stream, views, self.device)  # (B, V, T, F)
                probabilities[name] = head_probabilities(stream, pooled)
                features[name] = pooled.mean(dim=1)
            else:
                probabilities[name] = view_probabilities(stream, views, self.device)
        probabilities["fused"] = fuse_probabilities(probabilities, self.model.weights)
        if self.device.type != "cuda":
            return PendingScores(probabilities, features)
        hosted = [{k: _to_pinned(v) for k, v in part.items()} for part in (probabilities, features)]
        done = torch.cuda.Event()
        done.record()
        return PendingScores(*hosted, done)

    def forget_before(self, frame: int) -> None:
        """Drop cached flow fields of frame pairs that start before `frame`."""
        for index in [i for i in self._flows if i < frame]:
            del self._flows[index]

    def _clips(self, stream: StreamNet, windows: list[Window], ring: FrameRing) -> torch.Tensor:
        """The windows' clips (B, T, C, H, W) on the device: RGB frames, or flow stacks (C = 2L)."""
        config = stream.config
        offsets = clip_positions(stream, windows[0].length, self.segments).numpy()
        if any(window.length != windows[0].length for window in windows):
            return torch.stack([self._clips(stream, [window], ring)[0] for window in windows])
        positions = offsets[None] + np.array([window.start for window in windows]).reshape(-1, *[1] * offsets.ndim)
        if config.modality == "rgb":  # (B, T)
            read, inverse = np.unique(positions, return_inverse=True)
            frames = to_device(ring.frames(read, config.frame_size), self.device)
            return frames[index_to(inverse.reshape(-1), self.device)].unflatten(0, positions.shape)
        self._add_flows(stream, set(positions.flatten().tolist()), ring)  # (B, T, L)
        stacked = torch.stack([self._flows[i] for i in positions.flatten().tolist()])
        return stacked.reshape(len(windows), self.segments, config.flow_length * 2, *stacked.shape[-2:])

    def prefetch_flows(self, windows: list[Window], ring: FrameRing) -> None:
        """Compute, in one batch, the flow fields `windows` need that are not cached yet (GPU: fills the batch)."""
        stream = self.model.flow
        if stream is None:
            return
        needed = set()
        for window in windows:
            needed.update((clip_positions(stream, window.length, self.segments) + window.start).flatten().tolist())
        self._add_flows(stream, needed, ring)

    def _add_flows(self, stream: StreamNet, needed: set[int], ring: FrameRing) -> None:
        missing = np.array(sorted(needed - set(self._flows)), dtype=np.int64)
        if not len(missing):
            return
        if self.flow_source is not None:
            flows = self.flow_source(missing).to(self.device)
        else:
            read, first, second = unique_pair_frames(missing)
            frames = to_device(ring.frames(read, stream.config.frame_size), self.device)
            flows = pair_flows(frames, first, second, stream, self.flow_method, self.flow_params, self.flow_batch)
            self.flows_computed += len(missing)
        self._flows.update(zip(missing.tolist(), flows))


def _to_pinned(tensor: torch.Tensor) -> torch.Tensor:
    """A CUDA tensor → a pinned host tensor that will hold it once the work queued so far has run."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def pooled_features(stream: StreamNet, views: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Test views (B, V, T, C, S, S) → the backbone's globally pooled features (B, V, T, F) float32
    (F = `stream.num_features`, e.g. 1280 for EfficientNet-B0), before the stream's Fc 512."""
    batch, count, segments = views.shape[:3]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        frames = stream.normalize(views.flatten(0, 2))
        if stream.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        maps = stream.backbone.forward_features(frames)
    return maps.float().mean(dim=(2, 3)).view(batch, count, segments, -1)


def head_probabilities(stream: StreamNet, pooled: torch.Tensor) -> torch.Tensor:
    """Pooled features (B, V, T, F) → the stream's softmax averaged over views (B, classes): the rest of
    `StreamNet.forward` (Fc 512, attention, mean over segments, classifier) for segment tokens."""
    if stream.config.attention_tokens != "segments":
        raise MateffnetError("pooled features are per segment: the model's attention_tokens must be 'segments'")
    batch, count = pooled.shape[:2]
    tokens = attended_tokens(stream, pooled.flatten(0, 1))
    logits = stream.classifier(stream.dropout(tokens.mean(dim=1)))
    return logits.float().softmax(-1).view(batch, count, -1).mean(1)


def attended_tokens(stream: StreamNet, pooled: torch.Tensor) -> torch.Tensor:
    """Pooled features (N, T, F) → the stream's tokens after Fc 512 and self-attention over the T (N, T, 512)."""
    tokens = stream.embed(pooled.to(stream.embed.weight.dtype))
    return tokens if stream.attention is None else stream.attention(tokens)


@contextmanager
def decoded_frames(path, sizes: list, threads: int = 0):
    """Open a video once per frame size in `sizes` (the existing decoder, `data.decode.VideoReader`) and yield
    (VideoInfo, iterator of `Frames`): the frames decode as they are asked for, never the whole video at once."""
    readers = []
    try:
        for size in sizes:
            readers.append(VideoReader(path, size=parse_size(str(size)) if size is not None else None, threads=threads))
        streams = zip(*(reader.frames() for reader in readers))
        yield readers[0].info, ({size: frame for size, frame in zip(sizes, group)} for group in streams)
    finally:
        for reader in readers:
            reader.close()


def score_frames(frames: Iterable[Frames], scorer: WindowScorer, length: int, stride: int, batch: int = 1,
                 keep: Callable[[list[Window], FrameRing], object] | None = None) -> Iterator[tuple[list[Window], WindowScores, object]]:
    """Slide windows over `frames` and score them `batch` at a time: yields each batch's windows, their scores and
    what `keep(windows, ring)` returned while the ring held the batch's frames (None without `keep`).

    A batch's work is queued on the device before the previous batch's scores are waited for, so the host
    takes the next frames and hands out the scores while the device computes (on a CPU it changes nothing)."""
    pending = None
    for windows, ring in window_batches(frames, length, stride, batch):
        scorer.prefetch_flows(windows, ring)
        launched = windows, scorer.launch(windows, ring), keep(windows, ring) if keep is not None else None
        scorer.forget_before(windows[-1].start + stride)
        if pending is not None:
            yield pending[0], pending[1].result(), pending[2]
        pending = launched
    if pending is not None:
        yield pending[0], pending[1].result(), pending[2]


@contextmanager
def frames_ahead(frames: Iterable, depth: int):
    """Iterate `frames` in a background thread, up to `depth` items ahead of the consumer (a bounded queue), and
    yield an iterator over them: the decoder works while the caller computes (PyAV's decoding releases the GIL).
    An error raised by `frames` is raised by the iterator where it occurred; leaving the context stops the thread
    (before the decoder behind `frames` may be closed)."""
    if depth < 1:
        raise MateffnetError(f"frames decoded ahead must be at least 1, got {depth}")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in frames:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(_Raised(error))
            return
        put(_END)

    def consume() -> Iterator:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    worker = threading.Thread(target=produce, name="mateffnet-decode", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


_END = object()
