"""Where a trained model's attention goes on one view per stream (the paper's Fig. 9).

`explain_clips` runs each stream on its clip and draws its attention (segment attention, or per-frame heat
maps for a model with `attention_tokens="spatiotemporal"`); `mateffnet.commands.explain` decodes a video
for it and writes the summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models import TwoStreamNet, fuse_probabilities
from mateffnet.viz.attention import plot_segment_attention, plot_spatiotemporal_attention, run_attention

def explain_clips(model: TwoStreamNet, clips: dict[str, torch.Tensor], frames: dict[str, np.ndarray], out_dir: str | Path,
                  *, name: str = "video", frame_labels: dict[str, list[str]] | None = None,
                  topk: int = 5) -> tuple[dict[str, Path], dict[str, list[tuple[str, float]]]]:
    """Run each stream on its clip and draw its attention (what `mateffnet explain` does after decoding).

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
