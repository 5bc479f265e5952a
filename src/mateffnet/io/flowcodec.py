"""How quantised flow planes are stored: near-lossless LZ4 (the default: as compact as JPEG, as fast as LZ4)
or zstd, lossless LZ4 or zstd, or grayscale JPEG (TSN/mmaction2).

Each flow field is two uint8 planes (x, y) of the TSN quantisation. A training clip of the flow
stream reads 2·T·L planes (160 for T = 8, L = 10), so their decoding cost decides whether the
loader keeps a GPU busy. Compared on the same quantised flow (BENCHMARKS.md, "Flow codecs"):

    codec        bytes per field          decoding cost per plane    error (0-255 storage units)
    lz4-near     about JPEG's             LZ4's or less              at most 1 (bound 20: 0.157 px); 128 exact
    zstd-near    ~0.7 of JPEG's           ~1.2-1.8x LZ4's            the same
    lz4          ~3x JPEG's               ~1/4-1/5 of JPEG's         none
    zstd         ~2x JPEG's               ~2x LZ4's                  none
    jpeg (q95)   (the reference)          ~4-5x lz4-near's           up to ~10 at motion edges

Every codec stores one blob per plane and needs no header of its own: the plane size comes from the
packed file's meta. `decode_flow_batch` decodes the whole planes of a loader batch at once: on a CUDA device
with nvJPEG (jpeg) or nvCOMP (`mateffnet.io.nvcomp`: the LZ4 and zstd codecs), on the CPU one by one.

- "lz4": an LZ4 block (high-compression level `LZ4_LEVEL`) of the raw uint8 rows.
- "zstd": a zstd frame (level `ZSTD_LEVEL`, content size in its header) of the raw uint8 rows.
- "zstd-near", "lz4-near": the same of the codes c = (q + 2) // 3 (0…85); decoding gives
  max(3c, 1) − 1, the nearest of the 86 levels 0, 2, 5, …, 128, …, 251, 254, so every value moves by at
  most 1 and zero flow (128) stays exact. Flow is smooth, so 86 levels instead of 256 make the rows far
  more repetitive; decoding is the frame and one multiply.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import zstandard

from mateffnet.config import FLOW_QUALITY
from mateffnet.io.jpeg import Region
from mateffnet.io.nvcomp import ALIGNMENT
from mateffnet.errors import MateffnetError

FLOW_CODECS = ("lz4-near", "zstd-near", "lz4", "zstd", "jpeg")
NEAR_CODECS = ("lz4-near", "zstd-near")
NVCOMP_CODECS = ("lz4-near", "zstd-near", "lz4", "zstd")  # decoded on a CUDA GPU by nvCOMP (`decode_flow_batch`)
DEFAULT_FLOW_CODEC = "lz4-near"
# LZ4-HC level: 4 encodes ~1.6 ms per field on one core (a 16-core machine keeps up with the GPU
# TV-L1 of `prepare`); level 9 is 8 % smaller but 12x slower to encode, and decodes no faster.
LZ4_LEVEL = 4
# zstd level 6 encodes a 341x256 plane in under a millisecond on one core and is ~15 % smaller
# than levels 1-3; levels of 12 and more cost several ms per plane (too slow for `prepare`).
ZSTD_LEVEL = 6
NEAR_STEP = 3  # the near codecs' quantisation step, in storage units: the largest with an error of at most 1
_threads = threading.local()  # zstd (de)compression contexts are not thread-safe: one per thread


def check_flow_codec(codec: str) -> None:
    if codec not in FLOW_CODECS:
        raise MateffnetError(f"unknown flow codec {codec!r}; expected one of {', '.join(FLOW_CODECS)}")


def encode_flow_planes(planes: torch.Tensor | np.ndarray, codec: str, quality: int = FLOW_QUALITY) -> list[bytes]:
    """uint8 (N, H, W) planes → N byte strings in `codec` (`quality` is JPEG's)."""
    planes = torch.as_tensor(planes)
    if planes.dtype != torch.uint8 or planes.ndim != 3:
        raise ValueError(f"expected uint8 (N, H, W) planes, got {tuple(planes.shape)} {planes.dtype}")
    check_flow_codec(codec)
    if codec == "jpeg":
        from mateffnet.io.jpeg import encode_jpegs

        return encode_jpegs(planes.unsqueeze(1), quality)
    array = planes.cpu().contiguous().numpy()
    if codec in NEAR_CODECS:
        array = near_codes(array)
    if codec.startswith("zstd"):
        compressor = _zstd_context("compressor", lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL))
        return [compressor.compress(plane) for plane in array]
    import lz4.block

    return [lz4.block.compress(plane, mode="high_compression", compression=LZ4_LEVEL, store_size=False) for plane in array]


def decode_flow_planes(blobs: Sequence[torch.Tensor], codec: str, height: int, width: int,
                       region: Region | None = None, mirror: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """Stored planes (1-D uint8 tensors) of `width`×`height` → uint8 (N, H, W) on the CPU, or only
    `region` (top, left, height, width) of each, mirrored left-right if `mirror`, into `out` if given."""
    check_flow_codec(codec)
    if codec == "jpeg":
        from mateffnet.io.jpeg import decode_jpegs

        planes = None if out is None else out.view(len(blobs), 1, *out.shape[-2:])
        return decode_jpegs(blobs, gray=True, region=region, mirror=mirror, out=planes)[:, 0]
    top, left, rows, columns = region or (0, 0, height, width)
    if out is None:
        out = torch.empty(len(blobs), rows, columns, dtype=torch.uint8)
    target = out.numpy().reshape(len(blobs), rows, columns)
    near = codec in NEAR_CODECS
    for plane, blob in zip(target, blobs):
        whole = _decompress(blob, codec, height, width)
        copy_region(plane, whole[top : top + rows, left : left + columns], mirror)
        if near:
            np.multiply(plane, NEAR_STEP, out=plane)
    out = out.view(len(blobs), rows, columns)
    if near:
        out.clamp_min_(1).sub_(1)  # max(3c, 1) - 1 (numpy's maximum with a scalar is not vectorised)
    return out


def pack_blobs(blobs: Sequence[torch.Tensor], codec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored planes → (their bytes concatenated, their lengths) as `decode_flow_batch` reads them: JPEGs back to
    back, the other codecs' blobs each padded with zeros to a multiple of `nvcomp.ALIGNMENT` bytes (so packed
    samples concatenated are packed too)."""
    lengths = torch.tensor([blob.numel() for blob in blobs], dtype=torch.long)
    if codec == "jpeg" or not blobs:
        return (torch.cat(list(blobs)) if blobs else torch.empty(0, dtype=torch.uint8)), lengths
    zeros = np.zeros(ALIGNMENT, dtype=np.uint8)
    pieces = []  # numpy, not torch: a clip's 160 blobs are packed in ~0.3 ms instead of ~2 ms (slicing a tensor is slow)
    for blob, pad in zip(blobs, (_padded(lengths, codec) - lengths).tolist()):
        pieces += [blob.numpy(), zeros[:pad]]
    return torch.from_numpy(np.concatenate(pieces)), lengths


def blob_starts(lengths: torch.Tensor, codec: str) -> torch.Tensor:
    """Where each blob of `pack_blobs(blobs, codec)` starts."""
    padded = _padded(lengths, codec)
    return torch.cumsum(padded, 0) - padded


def _padded(lengths: torch.Tensor, codec: str) -> torch.Tensor:
    return lengths if codec == "jpeg" else (lengths + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def decode_flow_batch(data: torch.Tensor, lengths: torch.Tensor, codec: str, shapes: Sequence[tuple[int, int]],
                      device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """The planes of samples packed by `pack_blobs` and concatenated, `len(lengths) // len(shapes)` a sample of
    (height, width) `shapes[s]` → per sample uint8 (n, H, W) on `device`: decoded there in one batch on CUDA,
    on the CPU by `decode_flow_planes`."""
    check_flow_codec(codec)
    device = torch.device(device)
    per = len(lengths) // len(shapes)
    if codec == "jpeg":
        from mateffnet.io.jpeg import decode_jpeg_list

        images = decode_jpeg_list(torch.split(data, lengths.tolist()), gray=True, device=device)
        return [torch.stack(images[s * per : (s + 1) * per])[:, 0] for s in range(len(shapes))]
    starts = blob_starts(lengths, codec)
    if device.type != "cuda":
        blobs = [data[start : start + length] for start, length in zip(starts.tolist(), lengths.tolist())]
        return [decode_flow_planes(blobs[s * per : (s + 1) * per], codec, height, width)
                for s, (height, width) in enumerate(shapes)]
    from mateffnet.io.nvcomp import decompress

    sizes = torch.tensor([h * w for h, w in shapes], dtype=torch.long).repeat_interleave(per)
    out, offsets = decompress(data.to(device, non_blocking=True), starts, lengths, sizes, codec.split("-")[0])
    if codec in NEAR_CODECS:
        out.mul_(NEAR_STEP).clamp_(min=1).sub_(1)  # max(3c, 1) - 1, as decode_flow_planes does
    samples, offsets = [], offsets.tolist()
    for s, (height, width) in enumerate(shapes):
        first = offsets[s * per]
        stride = offsets[s * per + 1] - first if per > 1 else height * width  # nvCOMP's planes are padded
        planes = out[first : first + per * stride].view(per, stride)[:, : height * width]
        samples.append(planes.unflatten(1, (height, width)))
    return samples


def copy_region(target: np.ndarray, region: np.ndarray, mirror: bool) -> None:
    """target[...] = region, mirrored left-right if `mirror` (both uint8 (rows, columns)).

    numpy copies a reversed row byte by byte; for rows of whole 8-byte words it reverses the words
    and swaps the bytes inside each, which is several times faster and gives the same bytes."""
    if not mirror:
        np.copyto(target, region)
    elif region.shape[-1] % 8 == 0 and target.flags.c_contiguous and region.strides[-1] == 1:
        words = target.view(np.uint64)
        np.copyto(words, region.view(np.uint64)[:, ::-1])
        words.byteswap(inplace=True)
    else:
        np.copyto(target, region[:, ::-1])


def near_codes(planes: np.ndarray) -> np.ndarray:
    """uint8 values q → the near codecs' codes (q + 2) // 3, in 0…85."""
    return ((planes.astype(np.uint16) + 2) // NEAR_STEP).astype(np.uint8)


def _decompress(blob: torch.Tensor, codec: str, height: int, width: int) -> np.ndarray:
    """One stored plane → uint8 (height, width), or MateffnetError naming the codec and size."""
    size = height * width
    problem = None
    if codec.startswith("zstd"):
        try:
            data = _zstd_context("decompressor", zstandard.ZstdDecompressor).decompress(blob.numpy(), max_output_size=size)
        except zstandard.ZstdError as error:
            problem = str(error)
    else:
        import lz4.block

        try:
            data = lz4.block.decompress(blob.numpy(), uncompressed_size=size)
        except (lz4.block.LZ4BlockError, ValueError) as error:
            problem = str(error)
    if problem is None and len(data) != size:
        problem = f"it holds {len(data)} bytes, not {size}"
    if problem is not None:
        name = "LZ4" if codec == "lz4" else codec
        raise MateffnetError(f"cannot decode a stored {name} flow plane of {width}x{height} ({problem})")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width)


def _zstd_context(kind: str, make):
    context = getattr(_threads, kind, None)
    if context is None:
        context = make()
        setattr(_threads, kind, context)
    return context
