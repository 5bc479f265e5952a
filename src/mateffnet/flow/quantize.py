"""Flow <-> uint8, the TSN convention: clip to ±bound pixels, map linearly to 0–255.

q = round(255 · (v + bound) / (2 · bound)), clamped to [0, 255]; 0 px of motion lands on 128 (127.5
rounded half to even). The bound is stored with the data so it can be inverted exactly.
"""

from __future__ import annotations

import torch

from mateffnet.config import DEFAULT_BOUND


def quantize_flow(flow: torch.Tensor, bound: float = DEFAULT_BOUND) -> torch.Tensor:
    """Flow in pixels (any shape, float) → uint8 in the TSN 0–255 convention."""
    if bound <= 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
    scaled = (flow.float() + bound) * (255.0 / (2.0 * bound))
    return torch.round(scaled).clamp_(0, 255).to(torch.uint8)


def dequantize_flow(quantized: torch.Tensor, bound: float = DEFAULT_BOUND) -> torch.Tensor:
    """uint8 0–255 → flow in pixels (float32). Inverse of `quantize_flow` up to the step 2·bound/255."""
    return quantized.float() * (2.0 * bound / 255.0) - bound
