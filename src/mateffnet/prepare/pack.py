"""One video → one packed file: decode, resize, RGB JPEGs, flow (here or sent from the main process), write.

`pack_video` does it all in this process; the worker of flow-across-videos (`prepare.worker`) shares its
steps (`rgb_chunks`, `encode_flow`, `check_long_enough`, `video_meta`) and gets its flow from the batcher.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from mateffnet import __version__
from mateffnet.errors import error_line
from mateffnet.fileio import WRITE_ERRNOS, os_error_line
from mateffnet.flow import compute_flow, quantize_flow
from mateffnet.io.annotations import VideoItem
from mateffnet.io.decode import VideoDecodeError, VideoReader
from mateffnet.io.flowcodec import encode_flow_planes
from mateffnet.io.jpeg import encode_jpegs
from mateffnet.io.store import PackedVideoWriter
from mateffnet.prepare.options import PrepareOptions


def rgb_chunks(reader: VideoReader, writer: PackedVideoWriter, options: PrepareOptions) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the video chunk by chunk, write each chunk's RGB JPEGs, and yield (first frame number, chunk)."""
    count = 0
    for chunk in reader.chunks(options.chunk_frames, options.max_frames):
        for i, blob in enumerate(_encode_rgb(chunk, options.rgb_quality)):
            writer.add_rgb(count + i, blob)
        yield count, chunk
        count += len(chunk)


def check_long_enough(item: VideoItem, count: int) -> None:
    if count < 2:
        raise VideoDecodeError(item.path, "too_short", f"{count} frame; optical flow needs at least 2")


def video_meta(item: VideoItem, reader: VideoReader, options: PrepareOptions) -> dict:
    info = reader.info
    width, height = reader.size
    flow = None
    if options.flow_method != "none":
        flow = {
            "method": options.flow_method,
            "bound": options.flow_bound,
            "params": options.flow_params,
            "codec": options.flow_codec,
            "quality": options.flow_quality if options.flow_codec == "jpeg" else None,
        }
    return {
        "video_id": item.video_id,
        "width": width,
        "height": height,
        "fps": info.fps,
        "source": {"path": str(item.path), "bytes": item.path.stat().st_size},
        "original": {
            "width": info.width,
            "height": info.height,
            "codec": info.codec,
            "rotation": info.rotation,
            "declared_frames": info.declared_frames,
        },
        "rgb": {"codec": "jpeg", "quality": options.rgb_quality},
        "flow": flow,
        "settings": options.settings(),
        "mateffnet": __version__,
    }


def _encode_rgb(frames: np.ndarray, quality: int) -> list[bytes]:
    return encode_jpegs(torch.from_numpy(frames).permute(0, 3, 1, 2), quality)


def encode_flow(quantized: np.ndarray, options: PrepareOptions) -> list[tuple[bytes, bytes]]:
    """uint8 (n, 2, H, W) → [(x, y), …] in the store's flow codec."""
    n, _, h, w = quantized.shape
    blobs = encode_flow_planes(np.ascontiguousarray(quantized).reshape(2 * n, h, w), options.flow_codec, options.flow_quality)
    return list(zip(blobs[0::2], blobs[1::2]))


def _compute_quantized_flow(frames: np.ndarray, options: PrepareOptions, device: str) -> np.ndarray:
    """uint8 (n + 1, H, W, 3) consecutive frames → quantised flow uint8 (n, 2, H, W) from each to the next."""
    n = len(frames) - 1
    quantized, done = launch_quantized_flow(list(frames), list(range(n)), list(range(1, n + 1)), options, device)
    if done is not None:
        done.synchronize()
    return quantized.numpy()


def launch_quantized_flow(frames: list[np.ndarray], first: list[int], second: list[int], options: PrepareOptions,
                          device: str):
    """Flow from frames[first[i]] to frames[second[i]] (uint8 (H, W, 3) each, every frame uploaded once)
    → (uint8 (n, 2, H, W) CPU tensor, CUDA event or None), as `launch_flow_codes`."""
    on_cuda = device.startswith("cuda")
    unique = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=on_cuda)
    np.stack(frames, out=unique.numpy())
    return launch_flow_codes([unique.to(device, non_blocking=True)], first, second, options, device)


def launch_flow_codes(runs: list[torch.Tensor], first: list[int], second: list[int], options: PrepareOptions,
                      device: str):
    """Flow from frames[first[i]] to frames[second[i]], where frames (uint8 (M, H, W, 3) on `device`) are
    the `runs` one after the other → (uint8 (n, 2, H, W) CPU tensor, CUDA event or None): on CUDA the
    work is only queued, and the tensor holds the result once the event has completed."""
    on_cuda = device.startswith("cuda")
    rows = torch.tensor([first, second])
    with torch.inference_mode():
        frames = runs[0] if len(runs) == 1 else torch.cat(runs)
        # a pageable upload would wait for the GPU's previous batch: the indices go pinned
        rows = (rows.pin_memory() if on_cuda else rows).to(device, non_blocking=True)
        codes = flow_codes(frames[rows[0]].permute(0, 3, 1, 2), frames[rows[1]].permute(0, 3, 1, 2), options)
        if not on_cuda:
            return codes.cpu(), None
        host = torch.empty(codes.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(codes, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done


def flow_codes(frames0: torch.Tensor, frames1: torch.Tensor, options: PrepareOptions) -> torch.Tensor:
    """uint8 (N, 3, H, W) frame pairs → their flow quantised to uint8 (N, 2, H, W), on their device."""
    flow = compute_flow(frames0, frames1, method=options.flow_method, **options.flow_params)
    return quantize_flow(flow, options.flow_bound)


def pack_video(item: VideoItem, path: str | os.PathLike, options: PrepareOptions, device: str = "cpu", threads: int = 0) -> dict:
    """Decode, resize, compute flow and write one packed video (flow on `device`, in this process).

    Returns {"frames", "flows", "bytes"}; raises VideoDecodeError (with a reason) on a bad video.
    """
    with VideoReader(item.path, size=options.size, threads=threads) as reader, PackedVideoWriter(path) as writer:
        previous = None
        flows = 0
        for count, chunk in rgb_chunks(reader, writer, options):
            if options.flow_method != "none":
                frames = chunk if previous is None else np.concatenate([previous[None], chunk])
                first_flow = count - (previous is not None)
                for start in range(0, len(frames) - 1, options.flow_batch):
                    stop = min(start + options.flow_batch, len(frames) - 1)
                    quantized = _compute_quantized_flow(frames[start : stop + 1], options, device)
                    for k, (x, y) in enumerate(encode_flow(quantized, options)):
                        writer.add_flow(first_flow + start + k, x, y)
                    flows += stop - start
                previous = chunk[-1]
        count = writer.num_frames
        if options.flow_method != "none":
            check_long_enough(item, count)
        writer.finish(video_meta(item, reader, options))
    return {"frames": count, "flows": flows, "bytes": os.path.getsize(path)}


STORE_NOT_WRITABLE = "store_not_writable"  # the failure that stops the whole run (disk full, read-only)


def failure(error: BaseException, path: str | os.PathLike | None = None) -> dict:
    """The outcome of a video whose packing raised `error` (`path`: the packed file it was writing)."""
    if isinstance(error, VideoDecodeError):
        return {"status": "failed", "reason": error.reason, "detail": error.detail}
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS and _in_store(error.filename, path):
        return {"status": "failed", "reason": STORE_NOT_WRITABLE, "detail": os_error_line(error, path)}
    if isinstance(error, MemoryError):
        return {"status": "failed", "reason": "out_of_memory", "detail": "ran out of memory on this video"}
    return {"status": "failed", "reason": "error", "detail": f"{type(error).__name__}: {error_line(error, default='')}"}


def _in_store(filename, path) -> bool:
    """Whether an OSError about `filename` is about the packed file `path`'s folder (None: a write's own error)."""
    if filename is None or path is None:
        return True
    folder = os.path.dirname(os.fspath(path))
    return os.fspath(filename) == folder or os.path.dirname(os.fspath(filename)) == folder
