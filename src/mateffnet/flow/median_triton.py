"""Median filtering of flow planes on CUDA: one Triton kernel, an unrolled min/max network per pixel.

The networks below are `mateffnet.flow.tvl1._median_network(9)` and `(25)` written out (generated,
not hand-edited; `tests/flow/test_median_triton.py` checks that they still match), because Triton
kernels cannot loop over a Python list. Same result as `tvl1.median_filter` and cv::medianBlur.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def median_filter_triton(u: torch.Tensor, size: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """size × size median (3 or 5) of every plane of (N, C, H, W), border replicated; planes of pairs
    whose `active` (N,) entry is 0 are copied unchanged."""
    n, c, h, w = u.shape
    out = torch.empty_like(u)
    # Triton's interpreter (the CPU tests) runs one program after another: there, fewer and larger ones.
    block = 4096 if os.environ.get("TRITON_INTERPRET") == "1" else 256
    grid = (triton.cdiv(h * w, block), n * c)
    flags = active if active is not None else u
    _median_kernel[grid](u, out, flags, h, w, PLANES_PER_PAIR=c, SIZE=size, MASKED=active is not None,
                         BLOCK=block, num_warps=4)
    return out


@triton.jit
def _tap(base, y, x, dy: tl.constexpr, dx: tl.constexpr, H, W):
    yy = tl.minimum(tl.maximum(y + dy, 0), H - 1)
    xx = tl.minimum(tl.maximum(x + dx, 0), W - 1)
    return tl.load(base + yy * W + xx)


@triton.jit
def _median_kernel(src_ptr, dst_ptr, active_ptr, H, W, PLANES_PER_PAIR: tl.constexpr, SIZE: tl.constexpr,
                   MASKED: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(1).to(tl.int64)
    pixel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_image = pixel < H * W
    pixel = tl.minimum(pixel, H * W - 1)  # keeps every tap address inside the plane
    y = pixel // W
    x = pixel % W
    base = src_ptr + plane * H * W
    if SIZE == 3:
        v0 = _tap(base, y, x, -1, -1, H, W)
        v1 = _tap(base, y, x, -1, 0, H, W)
        v2 = _tap(base, y, x, -1, 1, H, W)
        v3 = _tap(base, y, x, 0, -1, H, W)
        v4 = _tap(base, y, x, 0, 0, H, W)
        v5 = _tap(base, y, x, 0, 1, H, W)
        v6 = _tap(base, y, x, 1, -1, H, W)
        v7 = _tap(base, y, x, 1, 0, H, W)
        v8 = _tap(base, y, x, 1, 1, H, W)
        median = _median_of_9(v0, v1, v2, v3, v4, v5, v6, v7, v8)
    else:
        v0 = _tap(base, y, x, -2, -2, H, W)
        v1 = _tap(base, y, x, -2, -1, H, W)
        v2 = _tap(base, y, x, -2, 0, H, W)
        v3 = _tap(base, y, x, -2, 1, H, W)
        v4 = _tap(base, y, x, -2, 2, H, W)
        v5 = _tap(base, y, x, -1, -2, H, W)
        v6 = _tap(base, y, x, -1, -1, H, W)
        v7 = _tap(base, y, x, -1, 0, H, W)
        v8 = _tap(base, y, x, -1, 1, H, W)
        v9 = _tap(base, y, x, -1, 2, H, W)
        v10 = _tap(base, y, x, 0, -2, H, W)
        v11 = _tap(base, y, x, 0, -1, H, W)
        v12 = _tap(base, y, x, 0, 0, H, W)
        v13 = _tap(base, y, x, 0, 1, H, W)
        v14 = _tap(base, y, x, 0, 2, H, W)
        v15 = _tap(base, y, x, 1, -2, H, W)
        v16 = _tap(base, y, x, 1, -1, H, W)
        v17 = _tap(base, y, x, 1, 0, H, W)
        v18 = _tap(base, y, x, 1, 1, H, W)
        v19 = _tap(base, y, x, 1, 2, H, W)
        v20 = _tap(base, y, x, 2, -2, H, W)
        v21 = _tap(base, y, x, 2, -1, H, W)
        v22 = _tap(base, y, x, 2, 0, H, W)
        v23 = _tap(base, y, x, 2, 1, H, W)
        v24 = _tap(base, y, x, 2, 2, H, W)
        median = _median_of_25(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17, v18, v19, v20, v21, v22, v23, v24)
    if MASKED:
        keep = tl.load(active_ptr + plane // PLANES_PER_PAIR) == 0
        median = tl.where(keep, tl.load(base + pixel), median)
    tl.store(dst_ptr + plane * H * W + pixel, median, mask=in_image)


@triton.jit
def _median_of_9(v0, v1, v2, v3, v4, v5, v6, v7, v8):
    v0, v1 = tl.minimum(v0, v1), tl.maximum(v0, v1)
    v2, v3 = tl.minimum(v2, v3), tl.maximum(v2, v3)
    v4, v5 = tl.minimum(v4, v5), tl.maximum(v4, v5)
    v6, v7 = tl.minimum(v6, v7), tl.maximum(v6, v7)
    v0, v2 = tl.minimum(v0, v2), tl.maximum(v0, v2)
    v1, v3 = tl.minimum(v1, v3), tl.maximum(v1, v3)
    v4, v6 = tl.minimum(v4, v6), tl.maximum(v4, v6)
    v5, v7 = tl.minimum(v5, v7), tl.maximum(v5, v7)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v0, v4 = tl.minimum(v0, v4), tl.maximum(v0, v4)
    v1, v5 = tl.minimum(v1, v5), tl.maximum(v1, v5)
    v2, v6 = tl.minimum(v2, v6), tl.maximum(v2, v6)
    v3 = tl.minimum(v3, v7)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v2 = tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5 = tl.minimum(v5, v6)
    v8 = tl.maximum(v0, v8)
    v4 = tl.minimum(v4, v8)
    v4 = tl.maximum(v2, v4)
    v3 = tl.minimum(v3, v5)
    v4 = tl.maximum(v3, v4)
    return v4


@triton.jit
def _median_of_25(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17, v18, v19, v20, v21, v22, v23, v24):
    v0, v1 = tl.minimum(v0, v1), tl.maximum(v0, v1)
    v2, v3 = tl.minimum(v2, v3), tl.maximum(v2, v3)
    v4, v5 = tl.minimum(v4, v5), tl.maximum(v4, v5)
    v6, v7 = tl.minimum(v6, v7), tl.maximum(v6, v7)
    v8, v9 = tl.minimum(v8, v9), tl.maximum(v8, v9)
    v10, v11 = tl.minimum(v10, v11), tl.maximum(v10, v11)
    v12, v13 = tl.minimum(v12, v13), tl.maximum(v12, v13)
    v14, v15 = tl.minimum(v14, v15), tl.maximum(v14, v15)
    v16, v17 = tl.minimum(v16, v17), tl.maximum(v16, v17)
    v18, v19 = tl.minimum(v18, v19), tl.maximum(v18, v19)
    v20, v21 = tl.minimum(v20, v21), tl.maximum(v20, v21)
    v22, v23 = tl.minimum(v22, v23), tl.maximum(v22, v23)
    v0, v2 = tl.minimum(v0, v2), tl.maximum(v0, v2)
    v1, v3 = tl.minimum(v1, v3), tl.maximum(v1, v3)
    v4, v6 = tl.minimum(v4, v6), tl.maximum(v4, v6)
    v5, v7 = tl.minimum(v5, v7), tl.maximum(v5, v7)
    v8, v10 = tl.minimum(v8, v10), tl.maximum(v8, v10)
    v9, v11 = tl.minimum(v9, v11), tl.maximum(v9, v11)
    v12, v14 = tl.minimum(v12, v14), tl.maximum(v12, v14)
    v13, v15 = tl.minimum(v13, v15), tl.maximum(v13, v15)
    v16, v18 = tl.minimum(v16, v18), tl.maximum(v16, v18)
    v17, v19 = tl.minimum(v17, v19), tl.maximum(v17, v19)
    v20, v22 = tl.minimum(v20, v22), tl.maximum(v20, v22)
    v21, v23 = tl.minimum(v21, v23), tl.maximum(v21, v23)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v13, v14 = tl.minimum(v13, v14), tl.maximum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v0, v4 = tl.minimum(v0, v4), tl.maximum(v0, v4)
    v1, v5 = tl.minimum(v1, v5), tl.maximum(v1, v5)
    v2, v6 = tl.minimum(v2, v6), tl.maximum(v2, v6)
    v3, v7 = tl.minimum(v3, v7), tl.maximum(v3, v7)
    v8, v12 = tl.minimum(v8, v12), tl.maximum(v8, v12)
    v9, v13 = tl.minimum(v9, v13), tl.maximum(v9, v13)
    v10, v14 = tl.minimum(v10, v14), tl.maximum(v10, v14)
    v11, v15 = tl.minimum(v11, v15), tl.maximum(v11, v15)
    v16, v20 = tl.minimum(v16, v20), tl.maximum(v16, v20)
    v17, v21 = tl.minimum(v17, v21), tl.maximum(v17, v21)
    v18, v22 = tl.minimum(v18, v22), tl.maximum(v18, v22)
    v19, v23 = tl.minimum(v19, v23), tl.maximum(v19, v23)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v10, v12 = tl.minimum(v10, v12), tl.maximum(v10, v12)
    v11, v13 = tl.minimum(v11, v13), tl.maximum(v11, v13)
    v18, v20 = tl.minimum(v18, v20), tl.maximum(v18, v20)
    v19, v21 = tl.minimum(v19, v21), tl.maximum(v19, v21)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v11, v12 = tl.minimum(v11, v12), tl.maximum(v11, v12)
    v13, v14 = tl.minimum(v13, v14), tl.maximum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v19, v20 = tl.minimum(v19, v20), tl.maximum(v19, v20)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v0, v8 = tl.minimum(v0, v8), tl.maximum(v0, v8)
    v1, v9 = tl.minimum(v1, v9), tl.maximum(v1, v9)
    v2, v10 = tl.minimum(v2, v10), tl.maximum(v2, v10)
    v3, v11 = tl.minimum(v3, v11), tl.maximum(v3, v11)
    v4, v12 = tl.minimum(v4, v12), tl.maximum(v4, v12)
    v5, v13 = tl.minimum(v5, v13), tl.maximum(v5, v13)
    v6, v14 = tl.minimum(v6, v14), tl.maximum(v6, v14)
    v7 = tl.minimum(v7, v15)
    v16, v24 = tl.minimum(v16, v24), tl.maximum(v16, v24)
    v4, v8 = tl.minimum(v4, v8), tl.maximum(v4, v8)
    v5, v9 = tl.minimum(v5, v9), tl.maximum(v5, v9)
    v6, v10 = tl.minimum(v6, v10), tl.maximum(v6, v10)
    v7, v11 = tl.minimum(v7, v11), tl.maximum(v7, v11)
    v20, v24 = tl.minimum(v20, v24), tl.maximum(v20, v24)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v6, v8 = tl.minimum(v6, v8), tl.maximum(v6, v8)
    v7, v9 = tl.minimum(v7, v9), tl.maximum(v7, v9)
    v10, v12 = tl.minimum(v10, v12), tl.maximum(v10, v12)
    v11, v13 = tl.minimum(v11, v13), tl.maximum(v11, v13)
    v18, v20 = tl.minimum(v18, v20), tl.maximum(v18, v20)
    v19, v21 = tl.minimum(v19, v21), tl.maximum(v19, v21)
    v22, v24 = tl.minimum(v22, v24), tl.maximum(v22, v24)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v7, v8 = tl.minimum(v7, v8), tl.maximum(v7, v8)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v11, v12 = tl.minimum(v11, v12), tl.maximum(v11, v12)
    v13 = tl.minimum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v19, v20 = tl.minimum(v19, v20), tl.maximum(v19, v20)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v23, v24 = tl.minimum(v23, v24), tl.maximum(v23, v24)
    v16 = tl.maximum(v0, v16)
    v17 = tl.maximum(v1, v17)
    v18 = tl.maximum(v2, v18)
    v19 = tl.maximum(v3, v19)
    v20 = tl.maximum(v4, v20)
    v21 = tl.maximum(v5, v21)
    v6 = tl.minimum(v6, v22)
    v7 = tl.minimum(v7, v23)
    v8 = tl.minimum(v8, v24)
    v16 = tl.maximum(v8, v16)
    v17 = tl.maximum(v9, v17)
    v10 = tl.minimum(v10, v18)
    v11 = tl.minimum(v11, v19)
    v12 = tl.minimum(v12, v20)
    v13 = tl.minimum(v13, v21)
    v10 = tl.maximum(v6, v10)
    v11 = tl.maximum(v7, v11)
    v12 = tl.minimum(v12, v16)
    v13 = tl.minimum(v13, v17)
    v12 = tl.maximum(v10, v12)
    v11 = tl.minimum(v11, v13)
    v12 = tl.maximum(v11, v12)
    return v12
