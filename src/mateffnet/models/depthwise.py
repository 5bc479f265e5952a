"""Stride-1 depthwise convolutions whose input gradient is a forward convolution.

For a stride-1 convolution, the gradient with respect to its input is the forward convolution of the
output's gradient with the spatially flipped kernel, padded by dilation × (kernel - 1) - padding. For
depthwise convolutions cuDNN's forward kernels are faster than its input-gradient (dgrad) kernels on the
H200 and give the same values (`benchmarks/depthwise_grad.py`, BENCHMARKS.md), so EfficientNet's stride-1
depthwise layers compute their input gradient that way. Parameters and state_dict keys are those of
`nn.Conv2d`; the weight gradient is the library's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ForwardInputGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # under autocast the forward ran in the output's dtype; the backward does too
        x_used, weight_used = x.to(grad.dtype), weight.to(grad.dtype)
        groups = weight.shape[0]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            flipped_padding = [d * (k - 1) - p for d, k, p in zip(ctx.dilation, weight.shape[2:], ctx.padding)]
            grad_x = F.conv2d(grad, weight_used.flip(2, 3), None, 1, flipped_padding, ctx.dilation, groups).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x_used, weight_used, None, [1, 1], list(ctx.padding), list(ctx.dilation), False, [0, 0], groups,
                [False, True, False])[1].to(weight.dtype)
        return grad_x, grad_weight, None, None


class DepthwiseConv2d(nn.Conv2d):
    """A stride-1, bias-free depthwise `nn.Conv2d` whose input gradient is a forward convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _ForwardInputGradient.apply(x, self.weight, self.padding, self.dilation)
        return super().forward(x)


def takes_forward_input_gradient(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels > 1
            and module.stride == (1, 1) and module.bias is None and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
            and all(d * (k - 1) >= p for d, k, p in zip(module.dilation, module.kernel_size, module.padding)))


def use_forward_input_gradients(model: nn.Module) -> int:
    """Replace, in place, every stride-1 bias-free depthwise `nn.Conv2d` of `model` by a `DepthwiseConv2d` holding
    the same weight; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if takes_forward_input_gradient(child):
                replacement = DepthwiseConv2d(child.in_channels, child.out_channels, child.kernel_size, 1, child.padding,
                                              child.dilation, child.groups, bias=False,
                                              device=child.weight.device, dtype=child.weight.dtype)
                replacement.weight = child.weight
                setattr(parent, name, replacement)
                replaced += 1
    return replaced
