"""Depthwise convolution (one filter per channel, as in EfficientNet's MBConv blocks) as Triton kernels on
channels_last tensors: the forward pass and both gradients, behind one autograd-aware custom op that
`torch.compile` treats as a single opaque call and a CUDA graph can capture.

cuDNN's depthwise kernels are the part of EfficientNet training that the compiler cannot touch: inductor
fuses the pointwise work around them but calls cuDNN for every depthwise layer. These kernels read the
channels_last layout directly (channels contiguous, so a block of channels is one coalesced load per tap) and
accumulate in float32. `use_triton_depthwise(net)` swaps them into a model in place of each
`nn.Conv2d(C, C, k, stride, padding=k // 2, groups=C, bias=False)`; elsewhere (CPU tensors, other convolutions)
the op is `F.conv2d`. Whether they are faster than cuDNN on a given GPU is for
`benchmarks/depthwise.py` to say; nothing uses them by default.

On the CPU, `TRITON_INTERPRET=1` runs the kernels in Triton's interpreter (the tests compare them with
`F.conv2d` that way).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

try:
    import triton
    import triton.language as tl
except ImportError:  # the op stays F.conv2d
    triton = None

KERNEL_SIZES = (3, 5, 7)
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def output_size(size: int, kernel: int, stride: int) -> int:
    padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def supported(x: torch.Tensor, weight: torch.Tensor, stride: int) -> bool:
    """Whether the Triton kernels run this call (else it is F.conv2d)."""
    return (triton is not None and (x.is_cuda or _INTERPRET) and x.dim() == 4 and weight.shape[1] == 1
            and weight.shape[0] == x.shape[1] and weight.shape[2] == weight.shape[3] in KERNEL_SIZES
            and stride in (1, 2) and x.dtype == weight.dtype)


def _tilings(channels: int, width: int, taps: int, block_cs: tuple[int, int, int],
             elements: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(BLOCK_W, BLOCK_C, num_warps) candidates for a kernel whose program holds TAPS × BLOCK_W × BLOCK_C values,
    the heuristic first (the middle block of channels and of `elements`: channels as wide as one coalesced load
    allows, positions to fill the block), then the small and large `elements` for every block of channels."""
    widest = max(16, triton.next_power_of_2(channels))
    configs = []
    for block_c, size in [(min(block_cs[1], widest), elements[1])] + [(c, e) for c in block_cs
                                                                     for e in (elements[0], elements[2])]:
        if block_c <= widest:
            block_w = max(1, min(triton.next_power_of_2(width), size // (taps * block_c)))
            config = (block_w, block_c, 8 if taps * block_w * block_c >= elements[2] else 4)
            configs += [config] if config not in configs else []
    return configs


def _plane_configs(channels: int, width: int) -> list[tuple[int, int, int]]:
    """Tilings of the forward and input-gradient kernels (one tap at a time)."""
    return _tilings(channels, width, 1, (32, 64, 128), (1024, 2048, 4096))


def _weight_configs(channels: int, width: int, taps: int) -> list[tuple[int, int, int]]:
    """Tilings of the weight-gradient kernel (a TAPS × BLOCK_W × BLOCK_C gather)."""
    return _tilings(channels, width, taps, (16, 32, 64), (2048, 4096, 8192))


_FASTEST: dict[tuple, tuple] = {}  # (kernel, shapes, dtype, device) → the tiling timed fastest


def _launch_fastest(key: tuple, configs: list[tuple], launch):
    """launch(config) with the config timed fastest for `key`, and what it returns: each candidate is timed once per
    key on CUDA (three launches after one that compiles it); in the interpreter, or during graph capture, the first."""
    if key not in _FASTEST:
        if _INTERPRET or len(configs) == 1 or torch.cuda.is_current_stream_capturing():
            return launch(configs[0])
        times = []
        for config in configs:
            launch(config)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                launch(config)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        _FASTEST[key] = configs[times.index(min(times))]
    return launch(_FASTEST[key])


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) as its (N, H, W, C) contiguous storage (a view where x is channels_last)."""
    return x.permute(0, 2, 3, 1).contiguous()


if triton is not None:

    @triton.jit
    def _forward_kernel(x, w, y, H, W, OH, OW, C, STRIDE: tl.constexpr, K: tl.constexpr,
                        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: one output row (n, oh), BLOCK_W output columns, BLOCK_C channels
        row = tl.program_id(0)
        n, oh = (row // OH).to(tl.int64), row % OH
        ow = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        for kh in tl.static_range(K):
            ih = oh * STRIDE + kh - K // 2
            for kw in tl.static_range(K):
                iw = ow * STRIDE + kw - K // 2
                ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & (ow < OW)
                xv = tl.load(x + ((n * H + ih) * W + iw)[:, None] * C + c[None, :],
                             mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + (kh * K + kw) * C + c, mask=c_ok, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        out = ((n * OH + oh) * OW + ow)[:, None] * C + c[None, :]
        tl.store(y + out, acc.to(y.dtype.element_ty), mask=(ow < OW)[:, None] & c_ok[None, :])

    @triton.jit
    def _input_grad_kernel(gy, w, gx, H, W, OH, OW, C, STRIDE: tl.constexpr, K: tl.constexpr,
                           BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: one input row (n, ih), BLOCK_W input columns, BLOCK_C channels; the transposed convolution
        row = tl.program_id(0)
        n, ih = (row // H).to(tl.int64), row % H
        iw = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        for kh in tl.static_range(K):
            oh_s = ih + K // 2 - kh  # = oh * STRIDE where this tap reaches ih
            oh = oh_s // STRIDE
            h_ok = (oh_s >= 0) & (oh_s % STRIDE == 0) & (oh < OH)
            for kw in tl.static_range(K):
                ow_s = iw + K // 2 - kw
                ow = ow_s // STRIDE
                ok = h_ok & (ow_s >= 0) & (ow_s % STRIDE == 0) & (ow < OW) & (iw < W)
                gv = tl.load(gy + ((n * OH + oh) * OW + ow)[:, None] * C + c[None, :],
                             mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + (kh * K + kw) * C + c, mask=c_ok, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
        out = ((n * H + ih) * W + iw)[:, None] * C + c[None, :]
        tl.store(gx + out, acc.to(gx.dtype.element_ty), mask=(iw < W)[:, None] & c_ok[None, :])

    @triton.jit
    def _weight_grad_kernel(x, gy, partial, H, W, OH, OW, C, ROWS_TOTAL, ROWS, STRIDE: tl.constexpr, K: tl.constexpr,
                            TAPS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: ROWS output rows (n, oh) from program_id(0) * ROWS, BLOCK_C channels, every tap at once:
        # a (TAPS, BLOCK_W, BLOCK_C) gather of x against one (BLOCK_W, BLOCK_C) tile of the output gradient
        chunk = tl.program_id(0)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        tap = tl.arange(0, TAPS)
        kh, kw = tap // K, tap % K
        tap_ok = tap < K * K
        acc = tl.zeros([TAPS, BLOCK_C], dtype=tl.float32)
        for r in range(ROWS):
            row = chunk * ROWS + r
            n, oh = (row // OH).to(tl.int64), row % OH
            for start in range(0, OW, BLOCK_W):
                ow = start + tl.arange(0, BLOCK_W)
                g_ok = (row < ROWS_TOTAL) & (ow < OW)
                gv = tl.load(gy + ((n * OH + oh) * OW + ow)[:, None] * C + c[None, :],
                             mask=g_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                ih = oh * STRIDE + kh - K // 2  # (TAPS,)
                iw = ow[None, :] * STRIDE + kw[:, None] - K // 2  # (TAPS, BLOCK_W)
                ok = (tap_ok & (ih >= 0) & (ih < H))[:, None] & (iw >= 0) & (iw < W) & g_ok[None, :]
                offsets = ((n * H + ih)[:, None] * W + iw)[:, :, None] * C + c[None, None, :]
                xv = tl.load(x + offsets, mask=ok[:, :, None] & c_ok[None, None, :], other=0.0).to(tl.float32)
                acc += tl.sum(xv * gv[None, :, :], axis=1)
        out = (chunk * TAPS + tap)[:, None].to(tl.int64) * C + c[None, :]
        tl.store(partial + out, acc, mask=tap_ok[:, None] & c_ok[None, :])


def _taps_by_channel(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, K, K) → (K*K, C) contiguous: one coalesced load of a block of channels per tap."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def _as_nchw(nhwc: torch.Tensor) -> torch.Tensor:
    return nhwc.permute(0, 3, 1, 2)  # channels_last (N, C, H, W), no copy


def triton_forward(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    n, c, h, w = x.shape
    k = weight.shape[-1]
    oh, ow = output_size(h, k, stride), output_size(w, k, stride)
    y = torch.empty(n, oh, ow, c, device=x.device, dtype=x.dtype)
    x_nhwc, taps = _nhwc(x), _taps_by_channel(weight)

    def launch(config):
        block_w, block_c, warps = config
        grid = (n * oh, triton.cdiv(ow, block_w), triton.cdiv(c, block_c))
        _forward_kernel[grid](x_nhwc, taps, y, h, w, oh, ow, c, STRIDE=stride, K=k, BLOCK_W=block_w,
                              BLOCK_C=block_c, num_warps=warps)

    _launch_fastest(("forward", x.shape, k, stride, x.dtype, x.device), _plane_configs(c, ow), launch)
    return _as_nchw(y)


def triton_input_grad(grad_y: torch.Tensor, weight: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    n, c, oh, ow = grad_y.shape
    k = weight.shape[-1]
    grad_x = torch.empty(n, height, width, c, device=grad_y.device, dtype=grad_y.dtype)
    grad_y_nhwc, taps = _nhwc(grad_y), _taps_by_channel(weight)

    def launch(config):
        block_w, block_c, warps = config
        grid = (n * height, triton.cdiv(width, block_w), triton.cdiv(c, block_c))
        _input_grad_kernel[grid](grad_y_nhwc, taps, grad_x, height, width, oh, ow, c, STRIDE=stride, K=k,
                                 BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)

    _launch_fastest(("input grad", grad_y.shape, height, width, k, stride, grad_y.dtype, grad_y.device),
                    _plane_configs(c, width), launch)
    return _as_nchw(grad_x)


def triton_weight_grad(x: torch.Tensor, grad_y: torch.Tensor, kernel: int, stride: int,
                       rows: int | None = None) -> torch.Tensor:
    """The weight's gradient (C, 1, K, K): float32 partial sums over chunks of `rows` output rows (by default
    as many as make a few thousand programs), then summed."""
    n, c, h, w = x.shape
    _, _, oh, ow = grad_y.shape
    taps = triton.next_power_of_2(kernel * kernel)
    rows_total = n * oh
    x_nhwc, grad_y_nhwc = _nhwc(x), _nhwc(grad_y)

    def launch(config):
        block_w, block_c, warps = config
        chunk = rows or max(1, min(64, rows_total * triton.cdiv(c, block_c) // 4096))
        chunks = triton.cdiv(rows_total, chunk)
        partial = torch.empty(chunks, taps, c, device=x.device, dtype=torch.float32)
        _weight_grad_kernel[(chunks, triton.cdiv(c, block_c))](
            x_nhwc, grad_y_nhwc, partial, h, w, oh, ow, c, rows_total, chunk, STRIDE=stride,
            K=kernel, TAPS=taps, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)
        return partial

    partial = _launch_fastest(("weight grad", x.shape, oh, ow, kernel, stride, rows, x.dtype, x.device),
                              _weight_configs(c, ow, taps), launch)
    return partial.sum(0)[: kernel * kernel].t().reshape(c, 1, kernel, kernel).contiguous()  # as the fake says


@torch.library.custom_op("mateffnet::depthwise_conv2d", mutates_args=())
def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """F.conv2d(x, weight, stride=stride, padding=K // 2, groups=C), channels_last out, by Triton where supported."""
    if supported(x, weight, stride):
        return triton_forward(x, weight, stride)
    return F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2, groups=x.shape[1]).contiguous(
        memory_format=torch.channels_last)


@depthwise_conv2d.register_fake
def _(x, weight, stride):
    n, c, h, w = x.shape
    k = weight.shape[-1]
    return x.new_empty(n, c, output_size(h, k, stride), output_size(w, k, stride)).contiguous(
        memory_format=torch.channels_last)


@torch.library.custom_op("mateffnet::depthwise_conv2d_backward", mutates_args=())
def depthwise_conv2d_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                              stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    if supported(x, weight, stride):
        grad_x = triton_input_grad(grad_y, weight, stride, x.shape[2], x.shape[3])
        grad_w = triton_weight_grad(x, grad_y, weight.shape[-1], stride).to(weight.dtype)
        return grad_x, grad_w
    padding, groups = weight.shape[-1] // 2, x.shape[1]
    grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_y, stride=stride, padding=padding, groups=groups)
    grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad_y, stride=stride, padding=padding, groups=groups)
    return grad_x.contiguous(memory_format=torch.channels_last), grad_w


@depthwise_conv2d_backward.register_fake
def _(grad_y, x, weight, stride):
    return torch.empty_like(x, memory_format=torch.channels_last), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride = stride


def _backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    grad_x, grad_w = depthwise_conv2d_backward(grad_y, x, weight, ctx.stride)
    return grad_x, grad_w, None


depthwise_conv2d.register_autograd(_backward, setup_context=_setup_context)


class TritonDepthwiseConv2d(nn.Module):
    """A depthwise `nn.Conv2d` (padding K // 2, no bias) computed by `depthwise_conv2d`; holds the same weight
    Parameter, so state dicts and optimizers are unchanged."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight
        self.stride = conv.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if torch.is_autocast_enabled(x.device.type):  # cast as autocast casts a convolution's inputs
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        return depthwise_conv2d(x, weight, self.stride)


def replaceable(module: nn.Module) -> bool:
    """A depthwise convolution these kernels compute: C → C, groups C, square K in KERNEL_SIZES, equal strides
    of 1 or 2, padding K // 2, no dilation, no bias, zero padding."""
    return (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels
            and module.bias is None and module.kernel_size[0] == module.kernel_size[1] in KERNEL_SIZES
            and module.stride[0] == module.stride[1] in (1, 2) and module.dilation == (1, 1)
            and module.padding == (module.kernel_size[0] // 2,) * 2 and module.padding_mode == "zeros")


def use_triton_depthwise(net: nn.Module) -> int:
    """Replace every replaceable depthwise convolution of `net` in place; returns how many."""
    swaps = [(parent, name, child) for parent in net.modules() for name, child in parent.named_children()
             if replaceable(child)]
    for parent, name, child in swaps:
        setattr(parent, name, TritonDepthwiseConv2d(child))
    return len(swaps)
