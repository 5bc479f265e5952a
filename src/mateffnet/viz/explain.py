"""`mateffnet explain`: where a trained model's attention goes on one video (the paper's Fig. 9).

`explain_video(video, model_dir, out_dir)` samples the video as a test would (T evenly spaced segments),
runs each stream of the model, and writes per stream a figure of its attention (segment attention, or
per-frame heat maps for a model with `attention_tokens="spatiotemporal"`), plus `explain.json` with the
top classes per stream and fused.

The video is decoded, sampled and (for the flow stream) turned into flow exactly as `mateffnet predict`
does (`mateffnet.inference`), and the centre view of each segment is what the figures show.
`explain_clips` is the part that needs no decoding: it takes one view per stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json, output_folder
from mateffnet.models import TwoStreamNet, fuse_probabilities
from mateffnet.viz.attention import plot_segment_attention, plot_spatiotemporal_attention, run_attention

EXPLAIN_FILE = "explain.json"


@dataclass
class ExplainResult:
    figures: dict[str, Path]  # stream → figure
    summary: Path  # explain.json
    predictions: dict[str, list[tuple[str, float]]]  # stream (and "fused") → top classes with probabilities


def explain_video(video: str | Path, model_dir: str | Path, out_dir: str | Path, *, segments: int | None = None,
                  flow_method: str | None = None, device: str = "cpu", topk: int = 5) -> ExplainResult:
    """Write `out_dir/<video stem>_<stream>_attention.png` per stream and `out_dir/explain.json`."""
    from mateffnet.inference import decode_for, segment_frames, stream_views

    video, out_dir = Path(video), output_folder(out_dir)
    model = TwoStreamNet.from_pretrained(model_dir, map_location=device)
    segments = segments or next(iter(model.streams.values())).config.num_segments
    clips, frames, labels = {}, {}, {}
    for name, stream in model.streams.items():
        decoded = decode_for(stream, video)
        clips[name] = stream_views(decoded, stream, segments, 1, torch.device(device), flow_method)[0]
        frames[name] = segment_frames(decoded, stream, segments)
        labels[name] = [f"segment {t + 1}" for t in range(segments)]
    figures, predictions = explain_clips(model, clips, frames, out_dir, name=video.name, frame_labels=labels, topk=topk)
    summary = {
        "video": str(video),
        "model": str(model_dir),
        "frames": int(len(decoded)),
        "segments": segments,
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


def top_classes(probabilities: torch.Tensor, names: list[str], k: int) -> list[tuple[str, float]]:
    values, indices = probabilities.topk(min(k, len(names)))
    return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]
