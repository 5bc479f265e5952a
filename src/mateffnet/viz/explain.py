"""`mateffnet explain`: where a trained model's attention goes on one video (the paper's Fig. 9).

`explain_video(video, model_dir, out_dir)` samples the video as a test would (T evenly spaced segments),
runs each stream of the model, and writes per stream a figure of its attention (segment attention, or
per-frame heat maps for a model with `attention_tokens="spatiotemporal"`), plus `explain.json` with the
top classes per stream and fused.

The video is read here with a small stand-in for the data pipeline: PyAV decodes every frame, resized so
its short side is `input_size · 256/224` (TSN's ratio of resize to crop) and centre-cropped to the model's
input size; flow is computed with `mateffnet.flow.compute_flow` between consecutive frames at that size
and quantised with the model's flow bound. `explain_clips` is the part that needs no decoding: it takes
one view per stream, so the data package's decoder and test-time sampling can feed it instead of
`sample_video` / `flow_clip`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json
from mateffnet.models import StreamNet, TwoStreamNet, fuse_probabilities
from mateffnet.models.streamnet import CONFIG_FILE
from mateffnet.viz.attention import plot_segment_attention, plot_spatiotemporal_attention, run_attention

EXPLAIN_FILE = "explain.json"


@dataclass
class SampledVideo:
    frames: np.ndarray  # uint8 (N, S, S, 3): every frame, resized and centre-cropped to the model's input size
    rgb_indices: list[int]  # the frame of each RGB segment
    flow_starts: list[int]  # the first flow field of each flow segment's stack (flow k: frame k → k + 1)


@dataclass
class ExplainResult:
    figures: dict[str, Path]  # stream → figure
    summary: Path  # explain.json
    predictions: dict[str, list[tuple[str, float]]]  # stream (and "fused") → top classes with probabilities


def explain_video(video: str | Path, model_dir: str | Path, out_dir: str | Path, *, segments: int | None = None,
                  flow_method: str | None = None, device: str = "cpu", topk: int = 5) -> ExplainResult:
    """Write `out_dir/<video stem>_<stream>_attention.png` per stream and `out_dir/explain.json`."""
    video, out_dir = Path(video), Path(out_dir)
    model = load_model(model_dir, device)
    first = next(iter(model.streams.values())).config
    if any(s.config.input_size != first.input_size for s in model.streams.values()):
        raise MateffnetError("the rgb and flow streams have different input sizes; explain one stream at a time")
    segments = segments or first.num_segments
    flow_length = model.flow.config.flow_length if model.flow is not None else 0
    sampled = sample_video(video, first.input_size, segments, flow_length)

    clips, frames, labels = {}, {}, {}
    if model.rgb is not None:
        clips["rgb"] = torch.from_numpy(sampled.frames[sampled.rgb_indices]).permute(0, 3, 1, 2)
        frames["rgb"] = sampled.frames[sampled.rgb_indices]
        labels["rgb"] = [f"frame {i}" for i in sampled.rgb_indices]
    if model.flow is not None:
        config = model.flow.config
        clips["flow"] = flow_clip(sampled.frames, sampled.flow_starts, config.flow_length, config.flow_bound, flow_method)
        frames["flow"] = sampled.frames[sampled.flow_starts]
        labels["flow"] = [f"flow {i}–{i + config.flow_length - 1}" for i in sampled.flow_starts]
    figures, predictions = explain_clips(model, clips, frames, out_dir, name=video.name, frame_labels=labels, topk=topk)
    summary = {
        "video": str(video),
        "model": str(model_dir),
        "frames": int(len(sampled.frames)),
        "segments": segments,
        "rgb_frames": sampled.rgb_indices if model.rgb is not None else None,
        "flow_starts": sampled.flow_starts if model.flow is not None else None,
        "predictions": {name: [{"class": c, "probability": p} for c, p in top] for name, top in predictions.items()},
        "figures": {name: path.name for name, path in figures.items()},
    }
    summary_path = out_dir / EXPLAIN_FILE
    atomic_write_json(summary_path, summary)
    return ExplainResult(figures, summary_path, predictions)


def explain_clips(model: TwoStreamNet, clips: dict[str, torch.Tensor], frames: dict[str, np.ndarray], out_dir: str | Path,
                  *, name: str = "video", frame_labels: dict[str, list[str]] | None = None,
                  topk: int = 5) -> tuple[dict[str, Path], dict[str, list[tuple[str, float]]]]:
    """Run each stream on its clip and draw its attention; the part of `explain_video` that needs no decoding.

    clips: stream → one view, uint8 (T, C, S, S), as the stream takes it; frames: stream → what to draw under
    the attention, uint8 (T, H, W, 3) (for the flow stream, e.g. the RGB frame where each stack starts).
    Writes `out_dir/<name stem>_<stream>_attention.png`; returns the figures and the top-k classes per stream
    and fused (when both streams ran).
    """
    out_dir = Path(out_dir)
    names = model.class_names or [str(i) for i in range(next(iter(model.streams.values())).config.num_classes)]
    probabilities, figures = {}, {}
    for stream_name, stream in model.streams.items():
        if stream_name not in clips:
            continue
        if stream.attention is None:
            raise MateffnetError(f"the {stream_name} stream has no attention layer (attention=False): nothing to draw")
        result = run_attention(stream, clips[stream_name][None])
        probabilities[stream_name] = result.logits.softmax(-1)[0]
        best = int(probabilities[stream_name].argmax())
        title = f"{name} — {stream_name} stream: {names[best]} ({100 * probabilities[stream_name][best]:.0f}%)"
        labels = (frame_labels or {}).get(stream_name)
        path = out_dir / f"{Path(name).stem}_{stream_name}_attention.png"
        if result.grid is None:
            figures[stream_name] = plot_segment_attention(frames[stream_name], result.weights[0], path, title=title,
                                                          frame_labels=labels)
        else:
            figures[stream_name] = plot_spatiotemporal_attention(frames[stream_name], result.weights[0], path,
                                                                 result.grid, title=title, frame_labels=labels)
    if not probabilities:
        raise MateffnetError(f"no clip given for the model's stream(s) {', '.join(model.streams)}")
    if len(probabilities) == 2:
        probabilities["fused"] = fuse_probabilities(probabilities, model.weights)
    return figures, {stream: top_classes(p, names, topk) for stream, p in probabilities.items()}


def load_model(model_dir: str | Path, device: str = "cpu") -> TwoStreamNet:
    """A two-stream folder (rgb/, flow/) or one stream's folder, as a TwoStreamNet on `device`."""
    model_dir = Path(model_dir)
    if (model_dir / CONFIG_FILE).is_file():
        stream = StreamNet.from_pretrained(model_dir, map_location=device)
        return TwoStreamNet(**{stream.config.modality: stream})
    return TwoStreamNet.from_pretrained(model_dir, map_location=device)


def sample_video(path: str | Path, size: int, segments: int, flow_length: int = 0) -> SampledVideo:
    """Decode `path` at the model's input size and choose T evenly spaced segments (TSN's test sampling).

    RGB segment t takes the middle frame of the t-th of T equal parts of the video; flow segment t the
    stack of `flow_length` flows starting in the middle of the t-th part of the possible starts. Videos
    shorter than a stack repeat their last flow (see `flow_clip`).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MateffnetError(f"video not found: {path}")
    resize = round(size * 256 / 224)
    frames = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                scale = resize / min(frame.width, frame.height)
                width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
                image = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                top, left = (height - size) // 2, (width - size) // 2
                frames.append(image[top:top + size, left:left + size])
    except (av.error.FFmpegError, ValueError) as error:
        raise MateffnetError(f"{path}: cannot decode ({error})") from error
    if not frames:
        raise MateffnetError(f"{path}: no frames decoded")
    if flow_length and len(frames) < 2:
        raise MateffnetError(f"{path}: {len(frames)} frame, the flow stream needs at least 2")
    count = len(frames)
    rgb = [min(count - 1, math.floor((t + 0.5) * count / segments)) for t in range(segments)]
    starts_range = max(1, count - flow_length)  # flows 0..count-2; a stack needs flow_length of them
    flow = [min(starts_range - 1, math.floor((t + 0.5) * starts_range / segments)) for t in range(segments)]
    return SampledVideo(np.stack(frames), rgb, flow if flow_length else [])


def flow_clip(frames: np.ndarray, starts: list[int], flow_length: int, bound: float,
              method: str | None = None) -> torch.Tensor:
    """The flow stacks at `starts` as uint8 (T, 2·flow_length, H, W), channels x0, y0, x1, y1, …

    Only the flows needed are computed (each once); a stack running past the last flow repeats it.
    """
    from mateffnet.flow import compute_flow, quantize_flow

    last = len(frames) - 2
    needed = sorted({min(s + k, last) for s in starts for k in range(flow_length)})
    gray = torch.from_numpy(frames).float() @ torch.tensor([0.299, 0.587, 0.114])
    index = torch.tensor(needed)
    options = {} if method is None else {"method": method}
    flows = quantize_flow(compute_flow(gray[index], gray[index + 1], **options), bound)  # (len(needed), 2, H, W)
    position = {k: i for i, k in enumerate(needed)}
    stacks = [torch.cat([flows[position[min(s + k, last)]] for k in range(flow_length)]) for s in starts]
    return torch.stack(stacks)


def top_classes(probabilities: torch.Tensor, names: list[str], k: int) -> list[tuple[str, float]]:
    values, indices = probabilities.topk(min(k, len(names)))
    return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]
