"""Optical flow: methods behind one switch, and the uint8 storage convention."""

from __future__ import annotations

from mateffnet.config import FLOW_METHODS
from mateffnet.errors import MateffnetError
from mateffnet.flow.quantize import DEFAULT_BOUND, dequantize_flow, quantize_flow
from mateffnet.flow.tvl1 import tvl1 as _tvl1  # not `tvl1`: that name is the module's
from mateffnet.flow.tvl1_params import TVL1_FAST



__all__ = [
    "FLOW_METHODS",
    "DEFAULT_BOUND",
    "TVL1_FAST",
    "compute_flow",
    "dequantize_flow",
    "quantize_flow",
]


def compute_flow(frames0, frames1, method: str = "tvl1", **params):
    """Flow from each frame of `frames0` to the same-index frame of `frames1`.

    frames: (N, H, W) grayscale or (N, 3, H, W) RGB, uint8 or float in 0–255, on any device.
    Returns (N, 2, H, W) float32 in pixels (channel 0 = x, 1 = y) on the input's device.
    method: "tvl1" (`mateffnet.flow.tvl1`, OpenCV's parameters; GPU or CPU), "farneback" (OpenCV,
    CPU), "raft" (torchvision RAFT; `mateffnet.flow.raft.raft`). params go to the method.
    """
    if method == "tvl1":
        return _tvl1(frames0, frames1, **params)
    if method == "farneback":
        from mateffnet.flow.farneback import farneback

        return farneback(frames0, frames1, **params).to(frames0.device)
    if method == "raft":
        from mateffnet.flow.raft import raft

        return raft(frames0, frames1, **params)
    raise MateffnetError(f"unknown flow method {method!r}; expected one of {', '.join(FLOW_METHODS)}")

