"""The input gradient of a strided depthwise convolution on CUDA: one Triton kernel, no cuDNN dgrad.

A stride-s layer's input position (s·a + r, s·b + q) receives w[u, v] · grad[a + (r + p - u) / s, b + (q + p - v) / s]
for the taps with r + p - u ≡ 0 and q + p - v ≡ 0 (mod s). Each program takes a block of (a, b) cells and a block of
channels, loads the few output-gradient pixels the cell's s × s input positions need, and writes all of them: which
tap feeds which phase is known when the kernel is compiled, so no load is wasted on a tap of the wrong phase.
It accumulates in float32, writes every input position once (deterministic), and takes any memory layout
(channels_last reads and writes each pixel's channels contiguously). Triton's interpreter (TRITON_INTERPRET=1) runs it
on CPU tensors: how the tests check it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def depthwise_input_grad_triton(grad: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                                stride: tuple[int, int], padding: tuple[int, int], block_cells: int = 32,
                                block_channels: int = 64, num_warps: int = 4) -> torch.Tensor:
    """Writes into `out` (N, C, H, W), any layout, whole, and returns it: the input gradient of the bias-free,
    dilation-1 depthwise convolution with `weight` (C, 1, kh, kw), `stride` and `padding` whose output gradient is
    `grad` (N, C, Ho, Wo). The block sizes and warps are the kernel's tuning (`benchmarks/depthwise_grad.py --sweep`)."""
    batch, channels, out_height, out_width = grad.shape
    height, width = out.shape[2:]
    cells = batch * triton.cdiv(height, stride[0]) * triton.cdiv(width, stride[1])
    # Triton's interpreter (the CPU tests) runs one program after another: there, fewer and larger ones.
    if os.environ.get("TRITON_INTERPRET") == "1":
        block_cells = 256
    block_channels = min(block_channels, triton.next_power_of_2(channels))
    grid = (triton.cdiv(cells, block_cells), triton.cdiv(channels, block_channels))
    _input_grad_kernel[grid](
        grad, weight.contiguous(), out, cells, channels, height, width, out_height, out_width,
        *grad.stride(), *out.stride(),
        KH=weight.shape[2], KW=weight.shape[3], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
        BLOCK_CELLS=block_cells, BLOCK_C=block_channels, num_warps=num_warps)
    return out


@triton.jit
def _input_grad_kernel(grad_ptr, weight_ptr, out_ptr, cells, C, H, W, HO, WO,
                       g_sn, g_sc, g_sh, g_sw, o_sn, o_sc, o_sh, o_sw,
                       KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                       PH: tl.constexpr, PW: tl.constexpr, BLOCK_CELLS: tl.constexpr, BLOCK_C: tl.constexpr):
    cell = (tl.program_id(0) * BLOCK_CELLS + tl.arange(0, BLOCK_CELLS)).to(tl.int64)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_cells = cell < cells
    in_channels = channel < C
    cells_across = (W + SW - 1) // SW
    cells_down = (H + SH - 1) // SH
    b = cell % cells_across
    a = (cell // cells_across) % cells_down
    n = cell // (cells_across * cells_down)
    grad_base = grad_ptr + n * g_sn
    grad_channel = (channel * g_sc)[None, :]
    for r in tl.static_range(SH):
        for q in tl.static_range(SW):
            y = a * SH + r
            x = b * SW + q
            acc = tl.zeros((BLOCK_CELLS, BLOCK_C), dtype=tl.float32)
            for u in tl.static_range(KH):
                if (r + PH - u) % SH == 0:
                    row = a + (r + PH - u) // SH
                    row_ok = (row >= 0) & (row < HO)
                    for v in tl.static_range(KW):
                        if (q + PW - v) % SW == 0:
                            col = b + (q + PW - v) // SW
                            ok = in_cells & row_ok & (col >= 0) & (col < WO)
                            g = tl.load(grad_base[:, None] + (row * g_sh + col * g_sw)[:, None] + grad_channel,
                                        mask=ok[:, None] & in_channels[None, :], other=0.0)
                            w = tl.load(weight_ptr + channel * (KH * KW) + (u * KW + v), mask=in_channels, other=0.0)
                            acc += g.to(tl.float32) * w.to(tl.float32)[None, :]
            inside = in_cells & (y < H) & (x < W)
            target = out_ptr + (n * o_sn + y * o_sh + x * o_sw)[:, None] + (channel * o_sc)[None, :]
            tl.store(target, acc.to(out_ptr.dtype.element_ty), mask=inside[:, None] & in_channels[None, :])
