"""What `mateffnet prepare` is asked to do (`PrepareOptions`), checked before any work starts."""

from __future__ import annotations

import dataclasses

from mateffnet.config import DEFAULT_BOUND, FLOW_METHODS, FLOW_QUALITY, RGB_QUALITY, TVL1_SCHEDULES
from mateffnet.errors import MateffnetError
from mateffnet.io.decode import Size
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC, check_flow_codec

CPU_ONLY_FLOW_METHODS = {"farneback"}


@dataclasses.dataclass
class PrepareOptions:
    size: Size = 256  # short side, or (width, height) e.g. (340, 256); None keeps the original size
    flow_method: str = "tvl1"  # a method of mateffnet.flow.compute_flow, or "none" for RGB only
    flow_bound: float = DEFAULT_BOUND
    flow_params: dict | None = None  # None: TV-L1's fixed fast schedule (mateffnet.flow.TVL1_FAST); {} for its OpenCV defaults
    device: str = "auto"  # where flow is computed: auto (CUDA if available), cpu, cuda, cuda:N
    workers: int | None = None  # decoding processes; None = one per CPU core; 0 = all in this process
    max_frames: int | None = None  # keep only the first frames of each video (tests, previews)
    rgb_quality: int = RGB_QUALITY
    flow_quality: int = FLOW_QUALITY
    flow_codec: str = DEFAULT_FLOW_CODEC  # how flow planes are stored: one of mateffnet.io.flowcodec.FLOW_CODECS
    flow_batch: int = 128  # frame pairs per compute_flow call
    chunk_frames: int = 64  # frames decoded and handed on at a time
    shard: tuple[int, int] | None = None  # (i, n): this process does every n-th video from i; None = torchrun's or (0, 1)
    verify: bool = False  # rerun: also check the image checksums of finished files (reads them fully)
    batch_across_videos: bool | None = None  # flow in the main process over pairs of several videos; None = on CUDA

    def __post_init__(self):
        if self.flow_params is None:
            self.flow_params = dict(TVL1_SCHEDULES["fast"]) if self.flow_method == "tvl1" else {}

    def settings(self) -> dict:
        """What a store's files depend on: a rerun must ask for the same."""
        return {
            "size": size_text(self.size),
            "max_frames": self.max_frames,
            "flow_method": self.flow_method,
            "flow_bound": self.flow_bound if self.flow_method != "none" else None,
            "flow_params": self.flow_params,
            "rgb_quality": self.rgb_quality,
            "flow_codec": self.flow_codec if self.flow_method != "none" else None,
            "flow_quality": self.flow_quality if self.flow_method != "none" and self.flow_codec == "jpeg" else None,
        }


def size_text(size: Size) -> str | None:
    if size is None:
        return None
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise MateffnetError(f"bad shard {i}/{n}: expected i/n with 0 <= i < n")


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' → (2, 8)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise MateffnetError(f"bad shard {text!r}: expected i/n like 0/4") from None
    check_shard((i, n))
    return i, n


def check_options(options: PrepareOptions) -> None:
    if options.flow_method != "none" and options.flow_method not in FLOW_METHODS:
        raise MateffnetError(
            f"unknown flow method {options.flow_method!r}; expected none or one of {', '.join(FLOW_METHODS)}"
        )
    if options.flow_bound <= 0:
        raise MateffnetError(f"flow bound must be > 0, got {options.flow_bound}")
    check_flow_codec(options.flow_codec)
    for name in ("rgb_quality", "flow_quality"):
        if not 1 <= getattr(options, name) <= 100:
            raise MateffnetError(f"{name} must be in 1..100, got {getattr(options, name)}")
    if options.max_frames is not None and options.max_frames < 1:
        raise MateffnetError(f"max_frames must be >= 1, got {options.max_frames}")
    if options.workers is not None and options.workers < 0:
        raise MateffnetError(f"workers must be >= 0, got {options.workers}")
    for name in ("flow_batch", "chunk_frames"):
        if getattr(options, name) < 1:
            option = f" (--{name.replace('_', '-')})" if name == "flow_batch" else ""
            raise MateffnetError(f"{name}{option} must be >= 1, got {getattr(options, name)}")
    _check_size(options.size)


def _check_size(size: Size) -> None:
    if size is None:
        return
    sides = [size] if isinstance(size, int) else list(size)
    if len(sides) not in (1, 2) or not all(isinstance(side, int) and side > 0 for side in sides):
        raise MateffnetError(f"size must be a short side > 0 or (width, height) > 0, got {size!r}")
