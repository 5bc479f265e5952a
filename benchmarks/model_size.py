"""Parameters and forward FLOPs of one stream, for each backbone of the paper, RGB and flow.

    python benchmarks/model_size.py [--segments 8] [--flow-length 10] [--classes 101]

FLOPs are counted by torch.utils.flop_counter (2 FLOPs per multiply-add) for one clip of T segments at
the backbone's paper input size; GFLOPs per segment = per clip / T. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from mateffnet.models import StreamNet

BACKBONES = ["efficientnet_b0", "resnet18", "resnet34", "resnet50"]


def measure(backbone: str, modality: str, attention: bool, segments: int, flow_length: int, classes: int):
    model = StreamNet(classes, modality=modality, backbone=backbone, attention=attention,
                      num_segments=segments, flow_length=flow_length).eval()
    size = model.config.input_size
    clips = torch.zeros(1, segments, model.config.in_chans, size, size, dtype=torch.uint8)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(clips)
    params = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone."))
    return params, head, counter.get_total_flops(), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--classes", type=int, default=101)
    args = parser.parse_args()
    print(f"One stream, {args.classes} classes, T = {args.segments} segments, flow L = {args.flow_length} "
          f"({2 * args.flow_length} channels)\n")
    print("| backbone | input | stream | attention | params (M) | of which head (M) | GFLOPs / clip | GFLOPs / segment |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone in BACKBONES:
        for modality in ("rgb", "flow"):
            for attention in (True, False):
                params, head, flops, size = measure(backbone, modality, attention, args.segments,
                                                    args.flow_length, args.classes)
                print(f"| {backbone} | {size} | {modality} | {'yes' if attention else 'no'} | {params / 1e6:.2f} | "
                      f"{head / 1e6:.2f} | {flops / 1e9:.2f} | {flops / 1e9 / args.segments:.3f} |")


if __name__ == "__main__":
    main()
