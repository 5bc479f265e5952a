"""How quantised flow planes are stored: as grayscale JPEG (TSN/mmaction2, compact) or LZ4 (lossless, fast).

Each flow field is two uint8 planes (x, y) of the TSN quantisation. A training clip of the flow
stream reads 2·T·L planes (160 for T = 8, L = 10), so their decoding cost decides whether the
loader keeps a GPU busy. On real TV-L1 flow at 341×256 (BENCHMARKS.md, "Data loading"):

    codec        bytes per field (x + y)    planes decoded per second, one core    exact
    jpeg (q95)   ~7 KiB                     ~5,400 (H100 host) – 6,300 (dev machine)    no (mean error ~0.06 of 255)
    lz4          ~21 KiB                    ~17,500 – 18,200                            yes

"lz4" is an LZ4 block per plane (high-compression level `LZ4_LEVEL`), raw uint8 rows, no header:
the plane size comes from the packed file's meta.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mateffnet.config import FLOW_QUALITY
from mateffnet.io.jpeg import Region, region_columns
from mateffnet.errors import MateffnetError

FLOW_CODECS = ("jpeg", "lz4")
# LZ4-HC level: 4 encodes ~1.6 ms per field on one core (a 16-core machine keeps up with the GPU
# TV-L1 of `prepare`); level 9 is 8 % smaller but 12x slower to encode, and decodes no faster.
LZ4_LEVEL = 4


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
    import lz4.block

    array = planes.cpu().contiguous().numpy()
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
    import lz4.block

    top, left, rows, columns = region or (0, 0, height, width)
    if out is None:
        out = torch.empty(len(blobs), rows, columns, dtype=torch.uint8)
    target = out.numpy().reshape(len(blobs), rows, columns)
    cols = region_columns(left, columns, mirror)
    try:
        for plane, blob in zip(target, blobs):
            whole = np.frombuffer(lz4.block.decompress(blob.numpy(), uncompressed_size=height * width), dtype=np.uint8)
            np.copyto(plane, whole.reshape(height, width)[top : top + rows, cols])
    except (lz4.block.LZ4BlockError, ValueError) as error:
        raise MateffnetError(f"cannot decode a stored LZ4 flow plane of {width}x{height} ({error})") from None
    return out.view(len(blobs), rows, columns)
