"""Optical flow: methods behind one switch, and the uint8 storage convention."""

from __future__ import annotations

from mateffnet.flow.quantize import DEFAULT_BOUND, dequantize_flow, quantize_flow
from mateffnet.flow.tvl1 import tvl1  # the function shadows its module's name here, on purpose

FLOW_METHODS = ("tvl1", "farneback", "raft")

# TV-L1 with a fixed iteration count, for dataset-scale extraction: no host synchronisation, up to 10×
# fewer iterations than OpenCV's defaults run on real video (where the epsilon rule rarely stops before
# 300 per warp), and a synthetic-suite EPE 1.04× that of OpenCV with its defaults (BENCHMARKS.md).
TVL1_FAST = {"epsilon": 0.0, "inner_iterations": 30, "outer_iterations": 1}

__all__ = [
    "FLOW_METHODS",
    "DEFAULT_BOUND",
    "TVL1_FAST",
    "compute_flow",
    "dequantize_flow",
    "quantize_flow",
    "tvl1",
]


def compute_flow(frames0, frames1, method: str = "tvl1", **params):
    """Flow from each frame of `frames0` to the same-index frame of `frames1`.

    frames: (N, H, W) grayscale or (N, 3, H, W) RGB, uint8 or float in 0–255, on any device.
    Returns (N, 2, H, W) float32 in pixels (channel 0 = x, 1 = y) on the input's device.
    method: "tvl1" (`mateffnet.flow.tvl1`, OpenCV's parameters; GPU or CPU), "farneback" (OpenCV,
    CPU), "raft" (torchvision RAFT; `mateffnet.flow.raft.raft`). params go to the method.
    """
    if method == "tvl1":
        return tvl1(frames0, frames1, **params)
    if method == "farneback":
        from mateffnet.flow.farneback import farneback

        return farneback(frames0, frames1, **params).to(frames0.device)
    if method == "raft":
        from mateffnet.flow.raft import raft

        return raft(frames0, frames1, **params)
    from mateffnet.errors import MateffnetError

    raise MateffnetError(f"unknown flow method {method!r}; expected one of {', '.join(FLOW_METHODS)}")

