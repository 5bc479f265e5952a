"""Depthwise convolutions whose input gradient is a forward convolution.

For a stride-1 convolution, the gradient with respect to its input is the forward convolution of the
output's gradient with the spatially flipped kernel, padded by dilation × (kernel - 1) - padding. For
depthwise convolutions cuDNN's forward kernels are faster than its input-gradient (dgrad) kernels on the
H200 and give the same values (`benchmarks/depthwise_grad.py`, BENCHMARKS.md), so EfficientNet's stride-1
depthwise layers compute their input gradient that way.

A stride-s layer's input gradient splits into s × s phases (the input positions i ≡ r mod s, j ≡ q mod s),
each a stride-1 correlation of the output's gradient with a sub-kernel of the flipped kernel (polyphase
decomposition); one depthwise convolution with s × s outputs per channel computes them all, and a permute
interleaves them. That path is opt-in (`strided=True`) and off in the backbones: cuDNN runs a depthwise
convolution with s × s outputs per channel far slower than its own strided dgrad (BENCHMARKS.md).
Parameters and state_dict keys are those of `nn.Conv2d`; the weight gradient is the library's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class _Phases:
    """Along one spatial dimension: how the input gradient of a stride-s, dilation-1 convolution is computed as one
    stride-1 correlation of the output's gradient with `length` taps per phase, padded by `padding`, keeping the
    outputs [start, start + per_phase); its kernel is the window [window, window + stride × length) of the flipped
    kernel padded by `kernel_padding`, read as (length, stride) with the phase axis reversed."""

    stride: int
    length: int
    padding: int
    start: int
    per_phase: int
    window: int
    kernel_padding: tuple[int, int]


def _phases(kernel: int, stride: int, padding: int, size_in: int, size_out: int) -> _Phases:
    # input position s·m + r receives w[u] · grad[m + (r + padding - u) / s] for every u with r + padding - u ≡ 0 (mod s)
    offsets = [(r + padding - u) // stride for r in range(stride) for u in range(kernel) if (r + padding - u) % stride == 0]
    first, last = min(offsets), max(offsets)
    length, per_phase = last - first + 1, -(-size_in // stride)
    conv_padding = max(0, -first, per_phase + last - size_out)
    flipped_first = kernel - 1 - padding + stride * first  # index in the flipped kernel of phase 0's first tap
    left = max(0, stride - 1 - flipped_first)
    window = max(flipped_first - (stride - 1), 0)
    right = max(0, window + stride * length - (left + kernel))
    return _Phases(stride, length, conv_padding, first + conv_padding, per_phase, window, (left, right))


def _polyphase_input_gradient(grad: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, stride, padding) -> torch.Tensor:
    channels, (height, width) = weight.shape[0], x.shape[2:]
    rows = _phases(weight.shape[2], stride[0], padding[0], height, grad.shape[2])
    cols = _phases(weight.shape[3], stride[1], padding[1], width, grad.shape[3])
    flipped = F.pad(weight.flip(2, 3), (*cols.kernel_padding, *rows.kernel_padding))
    window = flipped[:, 0, rows.window:rows.window + rows.stride * rows.length,
                     cols.window:cols.window + cols.stride * cols.length]
    kernels = (window.reshape(channels, rows.length, rows.stride, cols.length, cols.stride).flip(2, 4)
               .permute(0, 2, 4, 1, 3).reshape(channels * rows.stride * cols.stride, 1, rows.length, cols.length))
    phases = F.conv2d(grad, kernels, None, 1, (rows.padding, cols.padding), 1, channels)
    phases = phases[:, :, rows.start:rows.start + rows.per_phase, cols.start:cols.start + cols.per_phase]
    phases = phases.unflatten(1, (channels, rows.stride, cols.stride))  # (N, C, s, s, per_phase, per_phase)
    batch, full = grad.shape[0], (rows.per_phase * rows.stride, cols.per_phase * cols.stride)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last:
        grad_x = phases.permute(0, 4, 2, 5, 3, 1).reshape(batch, *full, channels).permute(0, 3, 1, 2)
    else:
        grad_x = phases.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, *full)
    if full != (height, width):
        grad_x = grad_x[:, :, :height, :width].contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return grad_x


class _ForwardInputGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.dilation = stride, padding, dilation
        return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # under autocast the forward ran in the output's dtype; the backward does too
        weight_used = weight.to(grad.dtype)
        groups = weight.shape[0]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            if ctx.stride == (1, 1):
                flipped_padding = [d * (k - 1) - p for d, k, p in zip(ctx.dilation, weight.shape[2:], ctx.padding)]
                grad_x = F.conv2d(grad, weight_used.flip(2, 3), None, 1, flipped_padding, ctx.dilation, groups)
            else:
                grad_x = _polyphase_input_gradient(grad, weight_used, x, ctx.stride, ctx.padding)
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x.to(grad.dtype), weight_used, None, list(ctx.stride), list(ctx.padding), list(ctx.dilation), False,
                [0, 0], groups, [False, True, False])[1].to(weight.dtype)
        return grad_x, grad_weight, None, None, None


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free depthwise `nn.Conv2d` whose input gradient is a forward convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _ForwardInputGradient.apply(x, self.weight, self.stride, self.padding, self.dilation)
        return super().forward(x)


def takes_forward_input_gradient(module: nn.Module, strided: bool = False) -> bool:
    if not (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels > 1
            and module.bias is None and module.padding_mode == "zeros" and isinstance(module.padding, tuple)):
        return False
    if module.stride == (1, 1):
        return all(d * (k - 1) >= p for d, k, p in zip(module.dilation, module.kernel_size, module.padding))
    return strided and module.dilation == (1, 1)


def use_forward_input_gradients(model: nn.Module, strided: bool = False) -> int:
    """Replace, in place, every stride-1 (and with `strided`, every strided, dilation-1) bias-free depthwise
    `nn.Conv2d` of `model` by a `DepthwiseConv2d` holding the same weight; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if takes_forward_input_gradient(child, strided):
                replacement = DepthwiseConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                              child.padding, child.dilation, child.groups, bias=False,
                                              device=child.weight.device, dtype=child.weight.dtype)
                replacement.weight = child.weight
                setattr(parent, name, replacement)
                replaced += 1
    return replaced
