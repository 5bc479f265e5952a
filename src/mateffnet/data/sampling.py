"""TSN segment sampling: which frames (RGB) or which flow stacks (flow) a clip is made of.

The video's sampling range is split into `num_segments` equal segments; training takes one random
position in each, testing the centre of each (TSN's `tick / 2 + tick * t`). The range is the RGB
frames 0..N-1 for RGB, and the first flows of stacks of `flow_length` consecutive flows for flow:
a video of N frames has N-1 flows (flow k: frame k → k+1), so stack starts run 0..N-1-L. This
module is the one place where that difference is handled.

Short videos never raise: fewer positions than segments repeat positions in order (0,0,0,1,1,1,2,2
for 3 positions and 8 segments), and a video with fewer flows than `flow_length` repeats its last
flow to fill the stack (as TSN does). Randomness comes from the `generator` passed in (the dataset
seeds one per sample from (seed, epoch, index)), or torch's global generator when none is given.
"""

from __future__ import annotations

import torch

from mateffnet.errors import MateffnetError


def segment_positions(
    num_positions: int, num_segments: int, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(num_segments,) int64 positions in 0..num_positions-1: random per segment (train) or centred (test)."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    count = max(int(num_positions), 1)
    t = torch.arange(num_segments, dtype=torch.float64)
    width = count / num_segments
    if train:
        low = torch.floor(t * width)
        high = torch.maximum(torch.floor((t + 1) * width), low + 1)
        positions = low + torch.floor(torch.rand(num_segments, generator=generator, dtype=torch.float64) * (high - low))
    else:
        positions = torch.floor(width / 2 + t * width)
    return positions.long().clamp_(0, count - 1)


def rgb_indices(num_frames: int, num_segments: int, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """(T,) frame indices of an RGB clip."""
    if num_frames < 1:
        raise MateffnetError("cannot sample RGB frames from a video with no frames")
    return segment_positions(num_frames, num_segments, train, generator)


def flow_indices(
    num_flows: int, num_segments: int, flow_length: int, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(T, L) flow indices of a flow clip: stack t is flows start_t, start_t+1, …, start_t+L-1."""
    if num_flows < 1:
        raise MateffnetError("cannot sample flow stacks from a video with no flow (prepared without flow, or 1 frame)")
    if flow_length < 1:
        raise ValueError(f"flow_length must be >= 1, got {flow_length}")
    starts = segment_positions(num_flows - flow_length + 1, num_segments, train, generator)
    stacks = starts[:, None] + torch.arange(flow_length)
    return stacks.clamp_(max=num_flows - 1)


def clip_indices(
    modality: str,
    num_frames: int,
    num_flows: int,
    num_segments: int,
    flow_length: int = 10,
    train: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RGB: (T,) frame indices; flow: (T, L) flow indices. The counts come from the video's store."""
    if modality == "rgb":
        return rgb_indices(num_frames, num_segments, train, generator)
    if modality == "flow":
        return flow_indices(num_flows, num_segments, flow_length, train, generator)
    raise MateffnetError(f"unknown modality {modality!r}; expected 'rgb' or 'flow'")
