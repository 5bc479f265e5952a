"""torchvision's RAFT optical flow (Teed & Deng, 2020) behind the same interface as the other methods.

Pretrained weights download from download.pytorch.org the first time (torchvision's cache); where
there is no internet, pass a local state-dict file (loaded with weights_only=True, so it cannot run
code), or weights=None for a randomly initialised network (speed measurements only: its flow is noise).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from mateffnet.errors import MateffnetError, error_line

RAFT_MODELS = ("small", "large")


def raft(
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    *,
    model: str = "small",
    weights: str | None = "default",
    iterations: int = 12,
    batch_size: int = 16,
) -> torch.Tensor:
    """Frame pairs (N, H, W) gray or (N, 3, H, W) RGB, uint8 or float 0–255 → flow (N, 2, H, W) float32.

    model: "small" or "large". weights: "default" (torchvision's pretrained weights, downloaded), a path
    to a state-dict file, or None (random). iterations: RAFT's recurrent flow updates.
    Runs on the frames' device, `batch_size` pairs at a time.
    """
    if frames0.shape != frames1.shape:
        raise MateffnetError(f"frames0 {tuple(frames0.shape)} and frames1 {tuple(frames1.shape)} differ in shape")
    if iterations < 1:
        raise MateffnetError(f"RAFT iterations={iterations}; expected >= 1")
    net = _load_model(model, None if weights is None else str(weights), str(frames0.device))
    flows = []
    with torch.inference_mode():
        for start in range(0, frames0.shape[0], batch_size):
            a = _prepare(frames0[start : start + batch_size])
            b = _prepare(frames1[start : start + batch_size])
            h, w = a.shape[-2:]
            # RAFT needs sizes divisible by 8 and at least 128 (its correlation pyramid).
            pad = (0, max(128, w + -w % 8) - w, 0, max(128, h + -h % 8) - h)
            a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
            flow = net(a, b, num_flow_updates=iterations)[-1]
            flows.append(flow[:, :, :h, :w].float())
    if not flows:
        return frames0.new_zeros((0, 2, *frames0.shape[-2:]), dtype=torch.float32)
    return torch.cat(flows)


def _prepare(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, 3, H, W) in 0–255 → (N, 3, H, W) in [-1, 1], as RAFT was trained."""
    if frames.ndim == 3:
        frames = frames[:, None].expand(-1, 3, -1, -1)
    elif frames.ndim != 4 or frames.shape[1] != 3:
        raise MateffnetError(f"frames have shape {tuple(frames.shape)}; expected (N, H, W) or (N, 3, H, W)")
    return frames.float() / 127.5 - 1.0


@functools.lru_cache(maxsize=4)
def _load_model(model: str, weights: str | None, device: str) -> torch.nn.Module:
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_large, raft_small

    if model not in RAFT_MODELS:
        raise MateffnetError(f"RAFT model {model!r}; expected one of {', '.join(RAFT_MODELS)}")
    build, pretrained = {"small": (raft_small, Raft_Small_Weights), "large": (raft_large, Raft_Large_Weights)}[model]
    net = build(weights=None)
    if weights == "default":
        try:
            state = pretrained.DEFAULT.get_state_dict(progress=False)
        except Exception as error:  # no network, DNS failure, proxy, HTTP error...
            raise MateffnetError(
                f"RAFT-{model} weights could not be downloaded from {pretrained.DEFAULT.url} "
                f"({type(error).__name__}); download that file elsewhere and pass its path as the weights "
                "(--raft-weights FILE), or weights=None for random weights (speed tests only)"
            ) from None
        net.load_state_dict(state)
    elif weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MateffnetError(f"RAFT weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as error:
            raise MateffnetError(
                f"RAFT weights file {path} is not a RAFT-{model} state dict ({type(error).__name__}: "
                f"{error_line(error)[:200]})"
            ) from None
    return net.eval().to(device)
