"""From a video file to class probabilities: decode, sample, compute flow on the fly, run the streams.

The test protocol is the one evaluation uses: `segments` evenly spaced segments (TSN: 25), each a frame
(RGB) or a stack of `flow_length` consecutive flow fields (flow), `crops` views (1 centre, 3, or 10), the
softmax averaged over views, and the streams fused by the model's fusion weights. Frames are decoded at
the size `mateffnet prepare` stores them (short side 256), flow is computed at that size, quantised as
stored, and both are then scaled as the evaluator does (short side input_size·256/224) and cropped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mateffnet.data.decode import read_video
from mateffnet.data.sampling import flow_indices, rgb_indices
from mateffnet.data.transforms import apply_crop, resize, test_crops
from mateffnet.errors import MateffnetError
from mateffnet.flow import compute_flow, quantize_flow
from mateffnet.models import StreamNet, TwoStreamNet

PREPARE_SHORT_SIDE = 256  # the frame size `mateffnet prepare` stores by default


def test_scale(input_size: int) -> int:
    """TSN's test-time short side for a crop size: 256 for 224, 128 for 112, 192 for 168."""
    return input_size * 256 // 224


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


def stream_views(frames: np.ndarray, stream: StreamNet, segments: int, crops: int, device: torch.device,
                 flow_method: str = "tvl1", flow_params: dict | None = None, flow_batch: int = 256) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) → the stream's test views (V, T, C, S, S) uint8 on `device`."""
    config = stream.config
    count = len(frames)
    if config.modality == "rgb":
        picked = torch.from_numpy(frames[rgb_indices(count, segments, train=False).numpy()]).permute(0, 3, 1, 2)
        clip = picked.to(device)
    else:
        if count < 2:
            raise MateffnetError(f"a video of {count} frame(s) has no optical flow (needs at least 2)")
        stacks = flow_indices(count - 1, segments, config.flow_length, train=False)  # (T, L)
        needed, inverse = torch.unique(stacks.flatten(), return_inverse=True)
        quantized = []
        for start in range(0, len(needed), flow_batch):
            chunk = needed[start:start + flow_batch].numpy()
            first = torch.from_numpy(frames[chunk]).permute(0, 3, 1, 2).to(device)
            second = torch.from_numpy(frames[chunk + 1]).permute(0, 3, 1, 2).to(device)
            quantized.append(quantize_flow(compute_flow(first, second, method=flow_method, **(flow_params or {})),
                                           config.flow_bound))
        flows = torch.cat(quantized)[inverse]  # (T·L, 2, H, W), in stack order
        clip = flows.view(segments, config.flow_length * 2, *flows.shape[-2:])  # interleaved x0, y0, x1, y1, …
    clip = resize_short_side(clip, test_scale(config.input_size))
    height, width = clip.shape[-2:]
    views = [apply_crop(clip, crop, config.input_size, flow=config.modality == "flow")
             for crop in test_crops(height, width, config.input_size, crops)]
    return torch.stack(views)


def resize_short_side(clip: torch.Tensor, short: int) -> torch.Tensor:
    height, width = clip.shape[-2:]
    if min(height, width) == short:
        return clip
    scale = short / min(height, width)
    size = (max(short, round(height * scale)), max(short, round(width * scale)))
    return resize(clip, size)


@torch.no_grad()
def predict_video(model: TwoStreamNet, frames: np.ndarray, segments: int = 25, crops: int = 1,
                  device: torch.device = torch.device("cpu"), flow_method: str = "tvl1",
                  flow_params: dict | None = None) -> dict[str, np.ndarray]:
    """Softmax per stream (mean over views) and fused, for one video's decoded frames."""
    probabilities = {}
    for name, stream in model.streams.items():
        views = stream_views(frames, stream, segments, crops, device, flow_method, flow_params)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = stream(views)
        probabilities[name] = logits.float().softmax(-1).mean(0)
    from mateffnet.models.twostream import fuse_probabilities

    probabilities["fused"] = fuse_probabilities(probabilities, model.weights)
    return {k: v.cpu().numpy() for k, v in probabilities.items()}


def predict(videos: list[str | Path], model: TwoStreamNet, segments: int = 25, crops: int = 1,
            device: torch.device = torch.device("cpu"), flow_method: str = "tvl1",
            flow_params: dict | None = None):
    """Yield a `Prediction` per video, in order; the next video decodes while this one runs."""
    model = model.to(device).eval()

    def decode(path):
        try:
            return read_video(path, size=PREPARE_SHORT_SIDE)[0], None
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
