"""`mateffnet predict`: the top classes of each video per stream and fused, as text or JSON lines."""

from __future__ import annotations

import json
import sys

from mateffnet.engine.inference import predict
from mateffnet.models import TwoStreamNet
from mateffnet.runtime import resolve_device


def run(videos: list[str], *, model: str, topk: int, json_lines: bool, segments: int, crops: int,
        fusion_weights: tuple[float, float] | None, device: str) -> int:
    """Exit status 1 when a video could not be classified (the others are still reported)."""
    torch_device = resolve_device(device)
    pair = TwoStreamNet.from_pretrained(model, map_location=torch_device)
    if fusion_weights:
        pair.weights = tuple(fusion_weights)
    names = pair.class_names or [str(i) for i in range(next(iter(pair.streams.values())).config.num_classes)]
    failed = 0
    for prediction in predict(videos, pair, segments, crops, torch_device):
        if prediction.error is not None:
            failed += 1
            print(f"mateffnet predict: error: {prediction.error}", file=sys.stderr)
            continue
        top = prediction.top(names, topk)
        if json_lines:
            print(json.dumps({"video": prediction.video, **top}), flush=True)
        else:
            print(prediction.video)
            for stream, entries in top.items():
                print(f"  {stream:<6} " + ", ".join(f"{e['label']} {100 * e['prob']:.1f}%" for e in entries))
    return 1 if failed else 0
