"""OpenCV's Farneback flow (CPU). Needs `cv2`: `pip install "mateffnet[opencv]"`."""

from __future__ import annotations

import numpy as np
import torch

from mateffnet.errors import MateffnetError


def farneback(frames0: torch.Tensor, frames1: torch.Tensor, **params) -> torch.Tensor:
    """Frame pairs (N, H, W) or (N, 3, H, W), uint8 or float 0–255 → flow (N, 2, H, W) float32, pixels."""
    try:
        import cv2
    except ImportError as error:
        raise MateffnetError(
            "flow method 'farneback' needs OpenCV: pip install \"mateffnet[opencv]\""
        ) from error
    options = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    options.update(params)
    gray0, gray1 = _to_gray_uint8(frames0), _to_gray_uint8(frames1)
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, **options) for a, b in zip(gray0, gray1)]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


def _to_gray_uint8(frames: torch.Tensor) -> np.ndarray:
    frames = frames.detach().cpu().float()
    if frames.ndim == 4:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        frames = (frames * weights).sum(1)
    return frames.round().clamp(0, 255).to(torch.uint8).numpy()
