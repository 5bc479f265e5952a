"""`mateffnet explain`: where a trained model's attention goes on one video (the paper's Fig. 9).

`explain_video(video, model_dir, out_dir)` samples the video as a test would (T evenly spaced segments),
runs each stream of the model, and writes per stream a figure of its attention plus `explain.json` with the
top classes per stream and fused. The video is decoded, sampled and (for the flow stream) turned into flow
exactly as `mateffnet predict` does (`mateffnet.engine.inference`); the centre view of each segment is what
the figures show (`mateffnet.viz.explain.explain_clips`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mateffnet.engine.inference import decode_for, segment_frames, stream_views
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json, output_folder
from mateffnet.models import TwoStreamNet
from mateffnet.viz.explain import explain_clips

EXPLAIN_FILE = "explain.json"


@dataclass
class ExplainResult:
    figures: dict[str, Path]  # stream → figure
    summary: Path  # explain.json
    predictions: dict[str, list[tuple[str, float]]]  # stream (and "fused") → top classes with probabilities


def explain_video(video: str | Path, model_dir: str | Path, out_dir: str | Path, *, segments: int | None = None,
                  flow_method: str | None = None, device: str = "cpu", topk: int = 5) -> ExplainResult:
    """Write `out_dir/<video stem>_<stream>_attention.png` per stream and `out_dir/explain.json`."""
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


def run(video: str, model: str, out: str, *, segments: int | None, flow_method: str | None, device: str,
        topk: int) -> int:
    if segments is not None and segments < 1:
        raise MateffnetError(f"--segments must be at least 1, got {segments}")
    result = explain_video(video, model, out, segments=segments, flow_method=flow_method, device=device, topk=topk)
    for stream, top in result.predictions.items():
        print(f"{stream:>5}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    for stream, path in result.figures.items():
        print(f"{stream} attention: {path}")
    print(f"summary: {result.summary}")
    return 0
