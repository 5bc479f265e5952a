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
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mateffnet.io.decode import VideoReader, parse_size
from mateffnet.errors import MateffnetError
from mateffnet.engine.inference import clip_positions, eval_views, flow_clip, flow_fields, view_probabilities
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
        first = self.start
        if len(indices) and (indices.min() < first or indices.max() >= self.end):
            raise MateffnetError(f"frames {indices.min()}..{indices.max()} asked for, the ring holds {first}..{self.end - 1}")
        return np.stack([self._frames[i - first][size] for i in indices.tolist()])


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


class WindowScorer:
    """Scores windows of a `FrameRing` with every stream of `model` (`segments` test segments, `crops` views).

    Flow fields are computed from the ring's frames, or read through `flow_source` (a packed store). Flow fields are cached by their absolute frame index across calls; `forget_before(frame)` drops the
    ones no later window can use."""

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

    @torch.no_grad()
    def score(self, windows: list[Window], ring: FrameRing) -> WindowScores:
        probabilities, features = {}, {}
        for name, stream in self.model.streams.items():
            clips = torch.stack([self._clip(stream, window, ring) for window in windows])  # (B, T, C, H, W)
            views = torch.stack([eval_views(clip, stream, self.crops) for clip in clips])  # (B, V, T, C, S, S)
            if self.features:
                pooled = pooled_features(stream, views, self.device)  # (B, V, T, F)
                probabilities[name] = head_probabilities(stream, pooled)
                features[name] = pooled.mean(dim=1).cpu().numpy()
            else:
                probabilities[name] = view_probabilities(stream, views, self.device)
        probabilities["fused"] = fuse_probabilities(probabilities, self.model.weights)
        return WindowScores({k: v.cpu().numpy() for k, v in probabilities.items()}, features)

    def forget_before(self, frame: int) -> None:
        """Drop cached flow fields of frame pairs that start before `frame`."""
        for index in [i for i in self._flows if i < frame]:
            del self._flows[index]

    def _clip(self, stream: StreamNet, window: Window, ring: FrameRing) -> torch.Tensor:
        config = stream.config
        positions = clip_positions(stream, window.length, self.segments) + window.start
        if config.modality == "rgb":
            return torch.from_numpy(ring.take(positions.numpy(), config.frame_size)).permute(0, 3, 1, 2).to(self.device)
        self._add_flows(stream, set(positions.flatten().tolist()), ring)
        stacked = torch.stack([self._flows[i] for i in positions.flatten().tolist()])
        return flow_clip(stacked, self.segments, config.flow_length)

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
            size = stream.config.frame_size
            flows = flow_fields(ring.take(missing, size), ring.take(missing + 1, size), stream, self.device,
                                self.flow_method, self.flow_params, self.flow_batch)
            self.flows_computed += len(missing)
        self._flows.update(zip(missing.tolist(), flows))


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


def score_frames(frames: Iterable[Frames], scorer: WindowScorer, length: int, stride: int,
                 batch: int = 1) -> Iterator[tuple[list[Window], WindowScores, FrameRing]]:
    """Slide windows over `frames` and score them `batch` at a time: yields each batch's windows, their scores
    and the ring that holds their frames (valid until the next batch is asked for)."""
    for windows, ring in window_batches(frames, length, stride, batch):
        scorer.prefetch_flows(windows, ring)
        yield windows, scorer.score(windows, ring), ring
        scorer.forget_before(windows[-1].start + stride)
