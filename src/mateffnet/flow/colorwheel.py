"""Flow as colour (the Middlebury colour wheel of Baker et al., 2011): hue = direction, saturation = speed."""

from __future__ import annotations

import math

import torch

# Colour transitions around the wheel and how many steps each takes (Middlebury's makecolorwheel).
_SEGMENTS = (
    ((255, 0, 0), (255, 255, 0), 15),  # red → yellow
    ((255, 255, 0), (0, 255, 0), 6),  # yellow → green
    ((0, 255, 0), (0, 255, 255), 4),  # green → cyan
    ((0, 255, 255), (0, 0, 255), 11),  # cyan → blue
    ((0, 0, 255), (255, 0, 255), 13),  # blue → magenta
    ((255, 0, 255), (255, 0, 0), 6),  # magenta → red
)


def color_wheel() -> torch.Tensor:
    """(55, 3) float RGB colours in 0–1, starting at red and turning through yellow, green, cyan, blue."""
    colours = []
    for start, end, steps in _SEGMENTS:
        for i in range(steps):
            colours.append([s + (e - s) * i / steps for s, e in zip(start, end)])
    return torch.tensor(colours) / 255.0


def flow_to_color(flow: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """(2, H, W) or (N, 2, H, W) flow in pixels → uint8 RGB (3, H, W) or (N, 3, H, W).

    Magnitudes are divided by `max_magnitude` (default: each field's own largest magnitude), so white
    is no motion and full saturation the largest; longer vectors (> max_magnitude) are darkened.
    """
    single = flow.ndim == 3
    flow = flow[None] if single else flow
    u, v = flow[:, 0].float(), flow[:, 1].float()
    magnitude = torch.sqrt(u * u + v * v)
    if max_magnitude is None:
        scale = magnitude.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1)
    else:
        scale = torch.as_tensor(float(max_magnitude)).clamp_min(1e-6)
    radius = magnitude / scale
    wheel = color_wheel().to(flow.device)
    n_colours = wheel.shape[0]
    angle = torch.atan2(-v, -u) / math.pi  # -1 … 1
    position = (angle + 1) / 2 * (n_colours - 1)
    k0 = position.floor().long().clamp(0, n_colours - 1)
    k1 = (k0 + 1) % n_colours
    frac = (position - k0.float()).unsqueeze(-1)
    colour = (1 - frac) * wheel[k0] + frac * wheel[k1]  # (N, H, W, 3)
    r = radius.unsqueeze(-1)
    inside = r <= 1 + 1e-6  # the largest vector itself, up to rounding, is not "beyond"
    colour = torch.where(inside, 1 - r.clamp(max=1) * (1 - colour), colour * 0.75)
    image = (colour * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 2).contiguous()
    return image[0] if single else image
