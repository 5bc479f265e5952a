"""From a video file to class probabilities: decode, sample, compute flow on the fly, run the streams.

The test protocol is the one evaluation uses: `segments` evenly spaced segments (TSN: 25), each a frame
(RGB) or a stack of `flow_length` consecutive flow fields (flow), `crops` views (1 centre, 3, or 10), the
softmax averaged over views, and the streams fused by the model's fusion weights. Frames are decoded at
the size the stream's training frames had (`frame_size` in its config, from the store it was trained on),
flow is computed there with the same method and parameters and quantised with the same bound, and the
views are cropped and resized exactly as the evaluator's (`data.transforms.eval_crops`). Only the flow
fields the sampled stacks need are computed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mateffnet.io.decode import parse_size, read_video
from mateffnet.data.sampling import flow_indices, rgb_indices
from mateffnet.io.store import MAGIC as PACKED_MAGIC
from mateffnet.data.transforms import apply_crop, eval_crops
from mateffnet.errors import MateffnetError
from mateffnet.flow import compute_flow, quantize_flow
from mateffnet.models import StreamNet, TwoStreamNet

@dataclass
class Prediction:
    video: str
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # "rgb", "flow", "fused" → (classes,)
    error: str | None = None

    def top(self, class_names: list[str], k: int = 5) -> dict[str, list[dict]]:
        out = {}
        for stream in ("fused", "rgb", "flow"):
            if stream in self.probabilities:
                p = self.probabilities[stream]
                order = np.argsort(-p)[:k]
                out[stream] = [{"label": class_names[i], "prob": round(float(p[i]), 6)} for i in order]
        return out


def decode_for(stream: StreamNet, video: str | Path) -> np.ndarray:
    """The video's frames at the size the stream was trained on: uint8 (N, H, W, 3). A store's packed
    file (.mfv) is refused: its frames were resized and its flow computed by `prepare`, so scoring it
    here would silently redo that differently; `mateffnet evaluate --data STORE` scores packed files."""
    _refuse_packed_file(video)
    size = stream.config.frame_size
    return read_video(video, size=parse_size(str(size)) if size is not None else None)[0]


def _refuse_packed_file(video: str | Path) -> None:
    try:
        with open(video, "rb") as f:
            head = f.read(len(PACKED_MAGIC))
    except OSError:
        return  # the decoder names the problem
    if head == PACKED_MAGIC:
        raise MateffnetError(
            f"{video}: a packed file of a prepared store, not a video; score stores with "
            "mateffnet evaluate --data STORE (predict and explain read video files)"
        )


def clip_positions(stream: StreamNet, num_frames: int, segments: int) -> torch.Tensor:
    """The test positions of a clip of `num_frames` frames: RGB (T,) frame indices, flow (T, L) flow indices
    (flow k: frame k → k+1), both counted from the clip's first frame."""
    config = stream.config
    if config.modality == "rgb":
        return rgb_indices(num_frames, segments, train=False)
    if num_frames < 2:
        raise MateffnetError(f"a video of {num_frames} frame(s) has no optical flow (needs at least 2)")
    return flow_indices(num_frames - 1, segments, config.flow_length, train=False)


def default_flow_batch(device: torch.device) -> int:
    """Frame pairs per flow call: big batches fill a GPU; on a CPU small ones stay in cache (several times faster)."""
    return 256 if device.type == "cuda" else 4


def to_device(frames, device: torch.device) -> torch.Tensor:
    """uint8 frames (n, H, W, 3) (an array, or a sequence of (H, W, 3) arrays) → uint8 (n, 3, H, W) on `device`.

    On CUDA the frames are stacked into pinned memory and copied without waiting: a copy from pageable
    memory would first wait for all the work already queued on the GPU."""
    pinned = device.type == "cuda"
    host = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=pinned)
    np.stack(frames, out=host.numpy())
    return host.to(device, non_blocking=pinned).permute(0, 3, 1, 2)


def index_to(indices: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 indices → a tensor on `device`, copied without waiting on CUDA (see `to_device`)."""
    host = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def pair_flows(frames: torch.Tensor, first: np.ndarray, second: np.ndarray, stream: StreamNet,
               flow_method: str | None = None, flow_params: dict | None = None,
               flow_batch: int | None = None) -> torch.Tensor:
    """Frames uint8 (n, 3, H, W) on a device → the stream's quantised flow fields (m, 2, H, W) uint8 there, field k
    from frames[first[k]] to frames[second[k]]: each frame is uploaded once however many pairs read it.

    Flow uses the stream's own flow method and parameters unless `flow_method`/`flow_params` are given. Nothing
    here waits for the device: on a GPU the work is only queued."""
    config = stream.config
    if flow_method is None:
        flow_method, flow_params = config.flow_method, config.flow_params
    flow_batch = flow_batch or default_flow_batch(frames.device)
    rows = index_to(np.stack([first, second]), frames.device)
    quantized = []
    for start in range(0, len(first), flow_batch):
        a, b = frames[rows[0, start:start + flow_batch]], frames[rows[1, start:start + flow_batch]]
        quantized.append(quantize_flow(compute_flow(a, b, method=flow_method, **(flow_params or {})), config.flow_bound))
    return torch.cat(quantized)


def unique_pair_frames(first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow indices (m,) (flow k: frame k → k+1) → (the frames they read, sorted, each once; where each pair's
    first and second frame are among those)."""
    frames = np.union1d(first, first + 1)
    position = np.searchsorted(frames, first)
    return frames, position, position + 1


def flow_fields(first: np.ndarray, second: np.ndarray, stream: StreamNet, device: torch.device,
                flow_method: str | None = None, flow_params: dict | None = None,
                flow_batch: int | None = None) -> torch.Tensor:
    """uint8 frame pairs (n, H, W, 3) → the stream's quantised flow fields (n, 2, H, W) uint8 on `device` (`pair_flows`)."""
    n = len(first)
    frames = to_device(np.concatenate([first, second]), device)
    return pair_flows(frames, np.arange(n), np.arange(n, 2 * n), stream, flow_method, flow_params, flow_batch)


def flow_clip(flows: torch.Tensor, segments: int, flow_length: int) -> torch.Tensor:
    """Quantised flows (T·L, 2, H, W) in stack order → a flow clip (T, 2L, H, W), interleaved x0, y0, x1, y1, …"""
    return flows.reshape(segments, flow_length * 2, *flows.shape[-2:])


def eval_views(clip: torch.Tensor, stream: StreamNet, crops: int) -> torch.Tensor:
    """A clip (T, C, H, W) uint8 → the stream's test views (V, T, C, S, S), cropped as the evaluator crops."""
    config = stream.config
    height, width = clip.shape[-2:]
    return torch.stack([apply_crop(clip, crop, config.input_size, flow=config.modality == "flow")
                        for crop in eval_crops(height, width, config.input_size, crops)])


def stream_views(frames: np.ndarray, stream: StreamNet, segments: int, crops: int, device: torch.device,
                 flow_method: str | None = None, flow_params: dict | None = None, flow_batch: int | None = None) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) → the stream's test views (V, T, C, S, S) uint8 on `device`.

    Flow uses the stream's own flow method and parameters unless `flow_method`/`flow_params` are given;
    only the flow fields the sampled stacks need are computed, each once."""
    config = stream.config
    positions = clip_positions(stream, len(frames), segments)
    if config.modality == "rgb":
        clip = to_device(frames[positions.numpy()], device)
    else:
        needed, inverse = torch.unique(positions.flatten(), return_inverse=True)
        read, first, second = unique_pair_frames(needed.numpy())
        flows = pair_flows(to_device(frames[read], device), first, second, stream, flow_method, flow_params, flow_batch)
        clip = flow_clip(flows[index_to(inverse.numpy(), device)], segments, config.flow_length)
    return eval_views(clip, stream, crops)


def view_probabilities(stream: StreamNet, views: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Test views of B clips (B, V, T, C, S, S) → the stream's softmax averaged over the views, (B, classes)."""
    batch, count = views.shape[:2]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = stream(views.flatten(0, 1))
    return logits.float().softmax(-1).view(batch, count, -1).mean(1)


def segment_frames(frames: np.ndarray, stream: StreamNet, segments: int) -> np.ndarray:
    """The RGB frame of each test segment (for flow: where its stack starts), centre view as the model sees
    it: uint8 (T, S, S, 3), to draw beside attention weights."""
    config = stream.config
    index = clip_positions(stream, len(frames), segments)
    if config.modality == "flow":
        index = index[:, 0]
    picked = torch.from_numpy(frames[index.numpy()]).permute(0, 3, 1, 2)
    (crop,) = eval_crops(*picked.shape[-2:], config.input_size, 1)
    return apply_crop(picked, crop, config.input_size, flow=False).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def predict_video(model: TwoStreamNet, frames: dict[str | None, np.ndarray], segments: int = 25, crops: int = 1,
                  device: torch.device = torch.device("cpu"), flow_method: str | None = None,
                  flow_params: dict | None = None) -> dict[str, np.ndarray]:
    """Softmax per stream (mean over views) and fused, for one video decoded at each stream's frame size
    (`frames[stream.config.frame_size]`)."""
    probabilities = {}
    for name, stream in model.streams.items():
        views = stream_views(frames[stream.config.frame_size], stream, segments, crops, device, flow_method, flow_params)
        probabilities[name] = view_probabilities(stream, views[None], device)[0]
    from mateffnet.models.twostream import fuse_probabilities

    probabilities["fused"] = fuse_probabilities(probabilities, model.weights)
    return {k: v.cpu().numpy() for k, v in probabilities.items()}


def predict(videos: list[str | Path], model: TwoStreamNet, segments: int = 25, crops: int = 1,
            device: torch.device = torch.device("cpu"), flow_method: str | None = None,
            flow_params: dict | None = None):
    """Yield a `Prediction` per video, in order; the next video decodes while this one runs."""
    model = model.to(device).eval()
    by_size = {stream.config.frame_size: stream for stream in model.streams.values()}

    def decode(path):
        try:
            return {size: decode_for(stream, path) for size, stream in by_size.items()}, None
        except MateffnetError as error:
            return None, str(error)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode, videos[0]) if videos else None
        for index, video in enumerate(videos):
            frames, error = pending.result()
            if index + 1 < len(videos):
                pending = pool.submit(decode, videos[index + 1])
            if error is not None:
                yield Prediction(str(video), error=error)
                continue
            try:
                yield Prediction(str(video), predict_video(model, frames, segments, crops, device, flow_method, flow_params))
            except MateffnetError as error:
                yield Prediction(str(video), error=f"{video}: {error}")
