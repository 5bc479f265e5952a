"""Optical flow: methods behind one switch, and the uint8 storage convention."""

from __future__ import annotations

from mateffnet.flow.quantize import DEFAULT_BOUND, dequantize_flow, quantize_flow

FLOW_METHODS = ("farneback",)

__all__ = ["FLOW_METHODS", "DEFAULT_BOUND", "compute_flow", "dequantize_flow", "quantize_flow"]


def compute_flow(frames0, frames1, method: str = "farneback", **params):
    """Flow from each frame of `frames0` to the same-index frame of `frames1`.

    frames: (N, H, W) grayscale or (N, 3, H, W) RGB, uint8 or float in 0–255, on any device.
    Returns (N, 2, H, W) float32 in pixels (channel 0 = x, 1 = y) on the input's device.
    """
    if method == "farneback":
        from mateffnet.flow.farneback import farneback

        return farneback(frames0, frames1, **params).to(frames0.device)
    from mateffnet.errors import MateffnetError

    raise MateffnetError(f"unknown flow method {method!r}; expected one of {', '.join(FLOW_METHODS)}")
