"""Crops and flips of whole clips: one `Crop` (position, size, flip) is drawn per clip and applied to
every frame of it, on any device (the same torch ops serve DataLoader workers on the CPU and
batches on the GPU).

Training: `random_crop` (the paper: random 224×224 crops) or TSN's `multiscale_crop` (crop sides
(1, .875, .75, .66) × the short side, width and height picked at most one scale apart, at 13 fixed
positions, resized to the input size), each with a horizontal flip of probability 0.5.
Testing: `eval_crops` with 1 (centre), 3 (along the long side) or 10 (4 corners + centre, then the
same 5 mirrored) crops.

A horizontal flip of a flow stack mirrors the images AND negates the x-flow, which in the 0–255
storage is 255 − v on the x channels (even channels of the interleaved x0, y0, x1, y1, … stack),
as TSN does. Flow values are not rescaled when a crop is resized (TSN convention). Nothing here
normalises: clips stay uint8 (or float in 0–255 units); the model normalises.
"""

from __future__ import annotations

import dataclasses

import torch
import torchvision.transforms.v2.functional as TF

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)
# A random or test crop covers 224/256 of the frame's short side and is then resized to the model's input
# size: TSN's "resize the short side to input·256/224, crop input" without resizing whole frames. For
# 224 inputs on frames with a 256 short side it is a plain 224 crop; ResNet-18's 112 inputs see the same
# field of view, downscaled.
CROP_FRACTION = 224 / 256


def crop_side(height: int, width: int) -> int:
    return max(1, round(min(height, width) * CROP_FRACTION))


@dataclasses.dataclass(frozen=True)
class Crop:
    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return low + int(torch.randint(high - low + 1, (1,), generator=generator))


def random_crop(height: int, width: int, size: int, generator: torch.Generator | None = None) -> Crop:
    """A square crop of `crop_side` at a uniformly random position (resized to `size` when applied)."""
    side = crop_side(height, width)
    return Crop(_randint(0, height - side, generator), _randint(0, width - side, generator), side, side)


def multiscale_crop(
    height: int,
    width: int,
    size: int,
    scales: tuple[float, ...] = TSN_SCALES,
    max_distort: int = 1,
    generator: torch.Generator | None = None,
) -> Crop:
    """TSN's GroupMultiScaleCrop (with its 13 fixed positions); the crop is later resized to `size`."""
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[_randint(0, len(pairs) - 1, generator)]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    offsets = _fixed_offsets(height, width, crop_h, crop_w, more=True)
    top, left = offsets[_randint(0, len(offsets) - 1, generator)]
    return Crop(top, left, crop_h, crop_w)


def _fixed_offsets(height: int, width: int, crop_h: int, crop_w: int, more: bool) -> list[tuple[int, int]]:
    """TSN's fill_fix_offset as (top, left): 4 corners + centre, and 8 more positions if `more`."""
    h, w = (height - crop_h) // 4, (width - crop_w) // 4
    offsets = [(0, 0), (0, 4 * w), (4 * h, 0), (4 * h, 4 * w), (2 * h, 2 * w)]
    if more:
        offsets += [(2 * h, 0), (2 * h, 4 * w), (4 * h, 2 * w), (0, 2 * w), (h, w), (h, 3 * w), (3 * h, w), (3 * h, 3 * w)]
    return offsets


def with_random_flip(crop: Crop, generator: torch.Generator | None = None, probability: float = 0.5) -> Crop:
    flip = bool(torch.rand((), generator=generator) < probability)
    return dataclasses.replace(crop, flip=flip)


def train_crop(
    height: int, width: int, size: int, kind: str = "random", flip: bool = True, generator: torch.Generator | None = None,
    scales: tuple[float, ...] = TSN_SCALES,
) -> Crop:
    """The training crop of one clip: kind "random" (the paper) or "multiscale" (TSN, `scales` of the short
    side), randomly flipped."""
    if kind == "random":
        crop = random_crop(height, width, size, generator)
    elif kind == "multiscale":
        crop = multiscale_crop(height, width, size, tuple(scales), generator=generator)
    else:
        from mateffnet.errors import MateffnetError

        raise MateffnetError(f"unknown training crop {kind!r}; expected 'random' or 'multiscale'")
    return with_random_flip(crop, generator) if flip else crop


def center_crop(height: int, width: int, size: int) -> Crop:
    side = crop_side(height, width)
    return Crop((height - side) // 2, (width - side) // 2, side, side)


def eval_crops(height: int, width: int, size: int, num_crops: int = 1) -> list[Crop]:
    """1: centre; 3: start, middle, end of the long side; 10: 4 corners + centre, then those 5 mirrored.
    Each crop is `crop_side` square, resized to `size` when applied."""
    side = crop_side(height, width)
    if num_crops == 1:
        return [center_crop(height, width, size)]
    if num_crops == 3:
        top, left = (height - side) // 2, (width - side) // 2
        if width >= height:
            return [Crop(top, x, side, side) for x in (0, left, width - side)]
        return [Crop(y, left, side, side) for y in (0, top, height - side)]
    if num_crops == 10:
        corners = [Crop(t, l, side, side) for t, l in _fixed_offsets(height, width, side, side, more=False)]
        return corners + [dataclasses.replace(c, flip=True) for c in corners]
    from mateffnet.errors import MateffnetError

    raise MateffnetError(f"number of test crops must be 1, 3 or 10, got {num_crops}")


def flip_clip(clip: torch.Tensor, flow: bool) -> torch.Tensor:
    """Mirror (..., C, H, W) horizontally; for a flow stack also negate x: 255 − v on even channels."""
    out = clip.flip(-1)
    if flow:
        negate_flow_x(out)
    return out


def negate_flow_x(clip: torch.Tensor) -> torch.Tensor:
    """In place: x-flow v → 255 − v on the even channels of a (..., C, H, W) flow stack (a mirrored flow field)."""
    x = clip[..., 0::2, :, :]
    if x.dtype == torch.uint8:
        x.bitwise_not_()  # ~v == 255 - v for uint8
    else:
        x.neg_().add_(255)
    return clip


def apply_crop(clip: torch.Tensor, crop: Crop, size: int, flow: bool) -> torch.Tensor:
    """Crop (..., C, H, W) → (..., C, size, size): slice, resize if the crop is not `size`, flip."""
    out = clip[..., crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    if crop.height != size or crop.width != size:
        out = resize(out, size)
    if crop.flip:
        out = flip_clip(out, flow)
    return out.contiguous()


def apply_crops(batch: torch.Tensor, crops: list[Crop], size: int, flow: bool) -> torch.Tensor:
    """One crop per sample of a batch (B, ..., C, H, W), e.g. on the GPU after decoding there."""
    return torch.stack([apply_crop(sample, crop, size, flow) for sample, crop in zip(batch, crops)])


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) → (..., size, size), bilinear with antialiasing, uint8 stays uint8.

    Every channel is resized on its own. On the CPU, uint8 planes are grouped four at a time as
    interleaved (channels_last) 4-channel images: torchvision's vectorised uint8 path takes those,
    while 1-channel images take a plain path ~8x slower; the results are identical.
    """
    lead, (h, w) = images.shape[:-2], images.shape[-2:]
    flat = images.reshape(-1, h, w)
    if flat.device.type != "cpu" or flat.dtype != torch.uint8:
        return TF.resize(flat[:, None], [size, size], antialias=True).reshape(*lead, size, size)
    count = flat.shape[0]
    if count % 4:
        flat = torch.cat([flat, flat.new_zeros(4 - count % 4, h, w)])
    grouped = flat.view(-1, 4, h, w).contiguous(memory_format=torch.channels_last)
    out = TF.resize(grouped, [size, size], antialias=True).contiguous().view(-1, size, size)
    return out[:count].reshape(*lead, size, size)
