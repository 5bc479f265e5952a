"""Frame pairs with known flow, made by warping real frames: the ground truth for accuracy checks.

For a flow field u on the grid of frame 0, frame0(x) = frame1(x + u(x)) (bicubic sampling of the real
frame1), so u is exactly the flow from frame0 to frame1 wherever x + u(x) lies inside frame1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def translation(height: int, width: int, dx: float, dy: float) -> torch.Tensor:
    flow = torch.empty(2, height, width)
    flow[0], flow[1] = dx, dy
    return flow


def rotation(height: int, width: int, degrees: float) -> torch.Tensor:
    """Rotation about the image centre: u(x) = R (x - c) + c - x."""
    x, y = _centred_grid(height, width)
    a = math.radians(degrees)
    return torch.stack((math.cos(a) * x - math.sin(a) * y - x, math.sin(a) * x + math.cos(a) * y - y))


def zoom(height: int, width: int, factor: float) -> torch.Tensor:
    """Scaling about the image centre: u(x) = (factor - 1)(x - c)."""
    x, y = _centred_grid(height, width)
    return torch.stack(((factor - 1) * x, (factor - 1) * y))


def smooth_field(height: int, width: int, max_magnitude: float, seed: int = 0) -> torch.Tensor:
    """A smooth non-rigid field: a few random low-frequency sinusoids, scaled to `max_magnitude` px."""
    g = torch.Generator().manual_seed(seed)
    x, y = _centred_grid(height, width)
    flow = torch.zeros(2, height, width)
    for c in range(2):
        for _ in range(4):
            fx, fy = (torch.rand(2, generator=g) * 2 - 1) * 2 * math.pi / torch.tensor([width, height]) * 1.5
            phase = torch.rand(1, generator=g) * 2 * math.pi
            flow[c] += torch.rand(1, generator=g) * torch.sin(fx * x + fy * y + phase)
    return flow * (max_magnitude / flow.norm(dim=0).max())


def standard_cases(height: int, width: int) -> dict[str, torch.Tensor]:
    """The accuracy suite: subpixel and large translations, rotation, zoom, a smooth non-rigid field.

    At 340x256 the largest displacements reach about 15 px (rotation and zoom, at the corners).
    """
    scale = min(height, width) / 256
    return {
        "translation_subpixel": translation(height, width, 0.4 * scale, -0.7 * scale),
        "translation_large": translation(height, width, -7.5 * scale, 4.75 * scale),
        "rotation": rotation(height, width, 4.0),
        "zoom": zoom(height, width, 1.06),
        "nonrigid": smooth_field(height, width, 7.0 * scale, seed=1),
    }


def make_pair(frame1: torch.Tensor, flow: torch.Tensor, margin: int = 2):
    """(H, W) or (3, H, W) uint8 frame1 and (2, H, W) flow → (frame0, frame1, valid).

    frame0 is rounded back to uint8 like a real frame; valid (H, W) marks pixels whose match x + u(x)
    lies at least `margin` px inside frame1 (elsewhere the flow is not determined by the images).
    """
    image = frame1.float()
    if image.ndim == 2:
        image = image[None]
    _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    tx, ty = xs + flow[0], ys + flow[1]
    grid = torch.stack((tx * 2 / (w - 1) - 1, ty * 2 / (h - 1) - 1), dim=-1)[None]
    frame0 = F.grid_sample(image[None], grid, mode="bicubic", padding_mode="border", align_corners=True)[0]
    frame0 = frame0.round().clamp(0, 255).to(torch.uint8)
    if frame1.ndim == 2:
        frame0 = frame0[0]
    valid = (tx >= margin) & (tx <= w - 1 - margin) & (ty >= margin) & (ty <= h - 1 - margin)
    return frame0, frame1, valid


def endpoint_error(flow: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Average end-point error ||flow - truth|| over the valid pixels of (2, H, W) fields."""
    error = (flow.float().cpu() - truth.float().cpu()).norm(dim=0)
    if valid is not None:
        error = error[valid.cpu()]
    return float(error.mean())


def _centred_grid(height: int, width: int):
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    return xs - (width - 1) / 2, ys - (height - 1) / 2
