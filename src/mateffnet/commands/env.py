"""`mateffnet env`: the versions and the code paths this machine uses, the block for a bug report.

Every line is `name: value`; a package that is not installed says "not installed" (never an error).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

from mateffnet import __version__


def environment_lines() -> list[str]:
    """`name: value` lines: Python, mateffnet, torch (CUDA build, GPU), the libraries, and what
    decoding, optical flow and JPEG will run on here."""
    import torch

    lines = [
        f"python: {platform.python_version()} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"mateffnet: {__version__}",
        f"torch: {torch.__version__} (CUDA build {torch.version.cuda or 'none'})",
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            lines.append(f"gpu {index}: {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})")
    else:
        lines.append("gpu: none visible to torch")
    for name in ("torchvision", "timm", "numpy", "triton", "safetensors", "pillow", "lz4", "matplotlib"):
        lines.append(f"{name}: {_version(name)}")
    lines.append(f"pyav: {_pyav()}")
    lines.append(f"opencv: {_opencv()}")
    lines += _code_paths(torch)
    return lines


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _pyav() -> str:
    try:
        import av
    except ImportError:
        return "not installed"
    ffmpeg = getattr(av, "ffmpeg_version_info", "") or "?"
    return f"{av.__version__} (FFmpeg {ffmpeg})"


def _opencv() -> str:
    try:
        import cv2
    except ImportError:
        return "not installed"
    contrib = hasattr(cv2, "optflow")  # the contrib build's module holding DualTVL1
    return f"{cv2.__version__} ({'contrib' if contrib else 'main build, no contrib'})"


def _code_paths(torch) -> list[str]:
    from mateffnet.io.jpeg import jpeg_codec
    from mateffnet.flow.tvl1 import _triton_available

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    kernels = "Triton kernels" if cuda and _triton_available() else "PyTorch ops"
    return [
        f"decoding: {'PyAV (FFmpeg, CPU)' if _pyav() != 'not installed' else 'unavailable: pip install av'}",
        f"flow (prepare, auto): TV-L1 on {device}, {kernels}",
        f"jpeg: {jpeg_codec(device)} on {device}" + ("" if not cuda else f", {jpeg_codec('cpu')} on cpu"),
    ]


def run_env() -> int:
    print("\n".join(environment_lines()))
    return 0
