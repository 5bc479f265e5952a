"""The flow of one video as images a user can look at: quantised x/y JPEGs and colour-coded flow.

Writes, for flow k (frame k → k+1, 0-based), `flow_x_{k+1:05d}.jpg`, `flow_y_{k+1:05d}.jpg` (the
TSN/mmaction2 names, 1-based) and `color_{k+1:05d}.jpg`, plus `flow.json` with the bound and method.
Files already written are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mateffnet.config import FLOW_QUALITY, TVL1_SCHEDULES
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json, output_folder
from mateffnet.flow import DEFAULT_BOUND, compute_flow, quantize_flow
from mateffnet.flow.colorwheel import flow_to_color
from mateffnet.io.decode import Size, frame_rgb, output_size, parse_size
from mateffnet.runtime import resolve_device

# On the CPU a flow call holds a few float copies of every frame it gets: a batch gets at most this many pixels
# (16 pairs at prepare's default 341x256), so memory stays bounded whatever the frame size.
CPU_BATCH_PIXELS = 16 * 341 * 256
# Larger frames on the CPU get an estimate of the time the whole video will take, measured on the first batch.
ESTIMATE_ABOVE_PIXELS = 341 * 256


@dataclass
class FlowImagesSummary:
    video: str
    out_dir: str
    pairs: int  # flow fields in the output folder
    computed: int  # of which computed in this run (the rest were already there)
    seconds: float
    method: str
    device: str


def write_flow_images(
    video: str | Path,
    out_dir: str | Path,
    *,
    method: str = "tvl1",
    device: str = "auto",
    bound: float = DEFAULT_BOUND,
    batch_size: int = 16,
    params: dict | None = None,
    progress: bool = True,
    size: Size = None,
    note=None,
) -> FlowImagesSummary:
    """Compute the flow between consecutive frames of `video` (resized to `size` first: a short side or (width,
    height); None keeps them) and write it to `out_dir` as images. On the CPU, batches are cut to
    CPU_BATCH_PIXELS, and for frames above ESTIMATE_ABOVE_PIXELS `note` (a callable taking one line) gets the
    time the video will take, measured on the first batch."""
    from tqdm import tqdm

    if bound <= 0:
        raise MateffnetError(f"flow bound {bound}; expected > 0 pixels")
    if batch_size < 1:
        raise MateffnetError(f"batch size {batch_size}; expected >= 1")
    if not Path(video).is_file():
        raise MateffnetError(f"video {video} does not exist")
    torch_device = resolve_device(device)
    out = output_folder(out_dir)
    params = dict(params or {})
    start = time.perf_counter()
    frames = _decode_rgb(Path(video), size)
    total = max(_frame_count(Path(video)) - 1, 0) or None
    pairs = computed = 0
    batch: list[np.ndarray] = []
    first = next(frames, None)
    estimate = False
    if first is not None and torch_device.type == "cpu":
        pixels = first.shape[0] * first.shape[1]
        batch_size = min(batch_size, max(1, CPU_BATCH_PIXELS // pixels))
        estimate = note is not None and pixels > ESTIMATE_ABOVE_PIXELS
    with tqdm(total=total, unit="pair", desc=Path(video).name, disable=not progress) as bar:
        for frame in itertools.chain([first] if first is not None else [], frames):
            batch.append(frame)
            if len(batch) == batch_size + 1:
                started = time.perf_counter()
                done = _flow_batch(batch, pairs, out, method, torch_device, bound, params)
                if estimate and done:
                    note(_estimate_line(first, (time.perf_counter() - started) / done, total, method))
                    estimate = False
                computed += done
                pairs += batch_size
                bar.update(batch_size)
                batch = [batch[-1]]
        if len(batch) > 1:
            computed += _flow_batch(batch, pairs, out, method, torch_device, bound, params)
            pairs += len(batch) - 1
            bar.update(len(batch) - 1)
        bar.total = pairs  # the container's frame count is only an estimate
        bar.refresh()
    if pairs == 0:
        raise MateffnetError(f"{video} has fewer than 2 frames; no flow to compute")
    height, width = batch[-1].shape[:2]
    atomic_write_json(
        out / "flow.json",
        {
            "video": str(video),
            "pairs": pairs,
            "height": height,
            "width": width,
            "bound": bound,
            "method": method,
            "params": params,
            "files": "flow_x_%05d.jpg, flow_y_%05d.jpg, color_%05d.jpg; index k+1 = flow from frame k to k+1 (0-based)",
        },
    )
    return FlowImagesSummary(str(video), str(out), pairs, computed, time.perf_counter() - start, method, str(torch_device))


def _estimate_line(frame: np.ndarray, seconds_per_pair: float, total: int | None, method: str) -> str:
    height, width = frame.shape[:2]
    whole = f"; the {total} pairs will take about {_duration(seconds_per_pair * total)}" if total else ""
    smaller = "x".join(str(side) for side in output_size(width, height, 256))
    return (f"mateffnet flow: note: {width}x{height} frames, {method} on the CPU: {seconds_per_pair:.2f} s a pair{whole}; "
            f"--size 256 computes it at {smaller}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _flow_batch(frames, first_index, out, method, device, bound, params) -> int:
    """Flow of consecutive `frames` (pairs first_index …), written unless all files already exist."""
    names = [(f"flow_x_{k + 1:05d}.jpg", f"flow_y_{k + 1:05d}.jpg", f"color_{k + 1:05d}.jpg")
             for k in range(first_index, first_index + len(frames) - 1)]
    if all((out / name).exists() for triple in names for name in triple):
        return 0
    stack = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(device)
    flow = compute_flow(stack[:-1], stack[1:], method=method, **params)
    quantised = quantize_flow(flow, bound).cpu()
    colours = flow_to_color(flow).cpu()
    for i, (x_name, y_name, colour_name) in enumerate(names):
        _write_jpeg(out / x_name, quantised[i, :1])
        _write_jpeg(out / y_name, quantised[i, 1:])
        _write_jpeg(out / colour_name, colours[i])
    return len(names)


def _write_jpeg(path: Path, image: torch.Tensor) -> None:
    """(1, H, W) gray or (3, H, W) RGB uint8 → JPEG file (written under a temporary name, then renamed)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="JPEG", quality=FLOW_QUALITY)


def _decode_rgb(path: Path, size: Size = None):
    """Yield the video's frames as (H, W, 3) uint8 RGB arrays (resized to `size`, bilinear, as prepare does).

    A minimal private decoder for this command; the data pipeline's decoder lives in mateffnet.data.
    """
    import av

    from mateffnet.io.decode import open_container

    try:
        with open_container(path) as container:
            if not container.streams.video:
                raise MateffnetError(f"{path} has no video stream")
            for frame in container.decode(video=0):
                scaled = () if size is None else output_size(frame.width, frame.height, size)
                yield frame_rgb(frame, *scaled)
    except av.error.FFmpegError as error:
        raise MateffnetError(f"cannot decode video {path}: {error}") from None


def _note(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _frame_count(path: Path) -> int:
    import av

    from mateffnet.io.decode import open_container

    try:
        with open_container(path) as container:
            return int(container.streams.video[0].frames or 0) if container.streams.video else 0
    except av.error.FFmpegError:
        return 0


def run(video: str, out: str, *, method: str, device: str, bound: float, batch_size: int, tvl1: str,
        raft_weights: str, size: str | None = None) -> int:
    """Write the flow images and print one line: how many fields, where, how fast."""
    params = {}
    if method == "tvl1":
        params = dict(TVL1_SCHEDULES[tvl1])
    if method == "raft":
        params = {"weights": None if raft_weights == "random" else raft_weights}
    summary = write_flow_images(video, out, method=method, device=device, bound=bound, batch_size=batch_size,
                                params=params, size=parse_size(size) if size else None, note=_note)
    rate = summary.computed / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{summary.video}: {summary.pairs} flow fields in {summary.out_dir} "
        f"({summary.computed} computed, {summary.pairs - summary.computed} already there; "
        f"{summary.method} on {summary.device}, {rate:.1f} pairs/s; bound ±{bound:g} px)"
    )
    return 0
