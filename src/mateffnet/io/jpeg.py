"""JPEG encoding and decoding of frame batches (libjpeg-turbo on CPU, nvJPEG on CUDA).

RGB frames are 3-channel JPEGs; each flow direction is a 1-channel (grayscale) JPEG of the
quantised flow, as in TSN/mmaction2 rawframes, so packed files and rawframe folders hold the same
bytes.

Decoding is torchvision's (`torchvision.io.decode_jpeg`: libjpeg-turbo on the CPU, nvJPEG batches on
CUDA). Encoding on the CPU is Pillow's (its libjpeg-turbo, the same settings as torchvision's encoder):
it takes the decoder's (H, W, C) frames without a copy, and a process that only encodes (a prepare
worker) does not import torchvision, which imports torch._dynamo and takes seconds to start. RGB on
CUDA is encoded with nvJPEG (torchvision's `encode_jpeg`). torchvision 0.29 deprecates its codecs;
where it no longer has them, Pillow decodes too and CUDA devices get the CPU-decoded images. Both
decoders give a JPEG the same pixels (tests/io/test_jpeg.py).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mateffnet.errors import MateffnetError, error_line

Region = tuple[int, int, int, int]  # top, left, height, width


def _torchvision_io():
    """torchvision.io, imported at first use: importing torchvision imports torch._dynamo (seconds), which a
    process that only encodes on the CPU (a prepare worker) or never touches a JPEG (prepare's main process)
    need not pay for."""
    import torchvision.io

    return torchvision.io


def encode_jpegs(images: torch.Tensor, quality: int) -> list[bytes]:
    """uint8 (N, C, H, W) images, C = 1 or 3, on any device → N JPEG byte strings.

    RGB batches on CUDA are encoded with nvJPEG; everything else with Pillow's libjpeg-turbo on the CPU
    (nvJPEG in torchvision encodes only 3-channel images). Images that are views of (N, H, W, C) frames
    are encoded without a copy.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {tuple(images.shape)} {images.dtype}")
    if len(images) == 0:
        return []
    encode_jpeg = getattr(_torchvision_io(), "encode_jpeg", None) if images.is_cuda and images.shape[1] == 3 else None
    if encode_jpeg is None:
        return [_pillow_encode(image, quality) for image in images.cpu()]
    return [bytes(blob.cpu().numpy()) for blob in encode_jpeg(list(images.contiguous()), quality=quality)]


def _pillow_encode(image: torch.Tensor, quality: int) -> bytes:
    array = image.numpy()
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0)))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)  # 4:2:0 for RGB, as torchvision's encoder
    return buffer.getvalue()


def _pillow_decode(blob: torch.Tensor, gray: bool) -> torch.Tensor:
    with Image.open(io.BytesIO(blob.numpy().tobytes()), formats=["JPEG"]) as picture:
        array = np.array(picture.convert("L" if gray else "RGB"))
    return torch.from_numpy(array[None] if gray else np.ascontiguousarray(array.transpose(2, 0, 1)))


def jpeg_codec(device: str | torch.device = "cpu") -> str:
    """Which codec decodes JPEGs on `device`: "nvjpeg", "torchvision" (libjpeg-turbo) or "pillow"."""
    if getattr(_torchvision_io(), "decode_jpeg", None) is None:
        return "pillow"
    return "nvjpeg" if torch.device(device).type == "cuda" else "torchvision"


def decode_jpeg_list(blobs: Sequence[torch.Tensor], gray: bool, device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """JPEG byte tensors (1-D uint8, on the CPU) → list of uint8 (C, H, W) on `device`, C = 1 if
    `gray` else 3. On a CUDA device the whole list is decoded in one nvJPEG batch (sizes may
    differ); on the CPU one after the other."""
    if not blobs:
        return []
    device = torch.device(device)
    tvio = _torchvision_io()
    decode_jpeg = getattr(tvio, "decode_jpeg", None)
    try:
        if decode_jpeg is None:
            images = [_pillow_decode(blob, gray) for blob in blobs]
            return images if device.type == "cpu" else [image.to(device) for image in images]
        mode = tvio.ImageReadMode.GRAY if gray else tvio.ImageReadMode.RGB
        if device.type == "cuda":
            return decode_jpeg(list(blobs), mode=mode, device=device)
        return [decode_jpeg(blob, mode=mode) for blob in blobs]
    except (RuntimeError, OSError) as error:
        raise MateffnetError(f"cannot decode a stored JPEG image ({error_line(error)})") from None


def decode_jpegs(blobs: Sequence[torch.Tensor], gray: bool, device: str | torch.device = "cpu",
                 region: Region | None = None, mirror: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """Like `decode_jpeg_list`, stacked: uint8 (N, C, H, W). All images must have the same size.

    On the CPU, `region` (top, left, height, width) keeps only that part of each image, `mirror`
    flips it left-right, and `out` (uint8 (N, C, h, w)) receives the result: each image is copied
    once, straight from the decoder's output, into the clip.
    """
    if not blobs:
        raise ValueError("no JPEG images to decode")
    if torch.device(device).type != "cpu":
        if region is not None or mirror or out is not None:
            raise ValueError("region, mirror and out are for decoding on the CPU; crop the decoded batch on the GPU")
        images = decode_jpeg_list(blobs, gray, device)
        _same_size(images)
        return torch.stack(images)
    first = decode_jpeg_list(blobs[:1], gray)[0]
    top, left, height, width = region or (0, 0, *first.shape[-2:])
    if out is None:
        out = torch.empty(len(blobs), first.shape[0], height, width, dtype=torch.uint8)
    target = out.numpy()
    columns = region_columns(left, width, mirror)
    for i, blob in enumerate(blobs):
        image = first if i == 0 else decode_jpeg_list([blob], gray)[0]
        if i:
            _same_size([first, image])
        np.copyto(target[i], image.numpy()[:, top : top + height, columns])
    return out


def region_columns(left: int, width: int, mirror: bool) -> slice:
    """The columns left … left+width-1 of an image, right to left if `mirror`."""
    return slice(left + width - 1, left - 1 if left else None, -1) if mirror else slice(left, left + width)


def _same_size(images: Sequence[torch.Tensor]) -> None:
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise MateffnetError(f"stored JPEG images of one clip differ in size: {sorted(shapes)}")


def as_tensor(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Bytes → 1-D uint8 tensor sharing the memory where it can (what `decode_jpeg` takes)."""
    if isinstance(data, bytes):
        data = bytearray(data)
    return torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.empty(0, dtype=torch.uint8)
