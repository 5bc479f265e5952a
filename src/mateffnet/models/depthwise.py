"""Depthwise convolutions with faster input gradients than cuDNN's dgrad.

For a stride-1 convolution, the gradient with respect to its input is the forward convolution of the
output's gradient with the spatially flipped kernel, padded by dilation × (kernel - 1) - padding; for
depthwise convolutions cuDNN's forward kernels are faster than its dgrad kernels and give the same values,
so EfficientNet's stride-1 depthwise layers compute their input gradient that way. The strided ones, on
CUDA with Triton, compute it with the Triton kernel of `models/depthwise_triton.py`, elsewhere with the
library's dgrad (`benchmarks/depthwise_grad.py`, BENCHMARKS.md). The weight gradient is the library's own;
parameters and state_dict keys are those of `nn.Conv2d`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mateffnet.errors import error_line

HAS_TRITON = importlib.util.find_spec("triton") is not None


class _DepthwiseGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, triton):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.dilation = stride, padding, dilation
        ctx.triton = triton and x.is_cuda and dilation == (1, 1) and HAS_TRITON
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
            elif ctx.triton:
                grad_x = _triton_input_grad(grad, weight_used, *x.shape[2:], ctx.stride, ctx.padding)
            else:
                grad_x = _library_gradient(grad, x, weight_used, ctx.stride, ctx.padding, ctx.dilation, input_grad=True)
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = _library_gradient(grad, x, weight_used, ctx.stride, ctx.padding, ctx.dilation,
                                            input_grad=False).to(weight.dtype)
        return grad_x, grad_weight, None, None, None, None


def _library_gradient(grad, x, weight, stride, padding, dilation, input_grad: bool) -> torch.Tensor:
    """The library's input gradient (`input_grad`; it reads only the shape of `x`) or weight gradient."""
    which = [input_grad, not input_grad, False]
    gradients = torch.ops.aten.convolution_backward(grad, x.to(grad.dtype), weight, None, list(stride), list(padding),
                                                    list(dilation), False, [0, 0], weight.shape[0], which)
    return gradients[0] if input_grad else gradients[1]


# A custom operator: opaque to torch.compile (it does not trace into the launch), capturable in a CUDA graph.
@torch.library.custom_op("mateffnet::depthwise_input_grad", mutates_args=(), device_types="cuda")
def _triton_input_grad(grad: torch.Tensor, weight: torch.Tensor, height: int, width: int, stride: Sequence[int],
                       padding: Sequence[int]) -> torch.Tensor:
    return triton_or_library_input_grad(grad, weight, height, width, tuple(stride), tuple(padding))


_triton_failed = False


def triton_or_library_input_grad(grad: torch.Tensor, weight: torch.Tensor, height: int, width: int,
                                 stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The input gradient by the Triton kernel (its module, and with it Triton, imported on the first call); where
    the kernel cannot be built or run (a GPU that Triton does not support, say), by the library's dgrad, from then
    on for the rest of the process, after one note on stderr."""
    global _triton_failed
    out = _empty_input_grad(grad, height, width)
    if not _triton_failed:
        try:
            from mateffnet.models.depthwise_triton import depthwise_input_grad_triton

            return depthwise_input_grad_triton(grad, weight, out, stride, padding)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - Triton's compile and launch errors have no common type
            _triton_failed = True
            print(f"note: the Triton depthwise input gradient failed ({error_line(error)[:200]}); using the "
                  "library's", file=sys.stderr)
    return _library_gradient(grad, out, weight, stride, padding, (1, 1), input_grad=True)


@_triton_input_grad.register_fake
def _(grad, weight, height, width, stride, padding):
    return _empty_input_grad(grad, height, width)


def _empty_input_grad(grad: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An uninitialised (N, C, height, width) tensor for the input gradient of `grad`, in its dtype, device and
    layout: channels_last where `grad` is laid out so (and not also plain contiguous, as a 1×1 map is)."""
    channels_last = grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous()
    return torch.empty((grad.shape[0], grad.shape[1], height, width), device=grad.device, dtype=grad.dtype,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free depthwise `nn.Conv2d` whose input gradient is computed as above: stride 1 as a forward
    convolution; strided by the Triton kernel where `triton` (the default) and the input is on CUDA, else by
    the library."""

    triton: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _DepthwiseGradients.apply(x, self.weight, self.stride, self.padding, self.dilation, self.triton)
        return super().forward(x)


def takes_depthwise_gradients(module: nn.Module) -> bool:
    """Whether `module` is a bias-free depthwise `nn.Conv2d` that `DepthwiseConv2d` computes: stride 1 with padding at
    most dilation × (kernel - 1), or strided with dilation 1."""
    if not (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels > 1
            and module.bias is None and module.padding_mode == "zeros" and isinstance(module.padding, tuple)):
        return False
    if module.stride == (1, 1):
        return all(d * (k - 1) >= p for d, k, p in zip(module.dilation, module.kernel_size, module.padding))
    return module.dilation == (1, 1)


def use_depthwise_gradients(model: nn.Module, triton: bool = True) -> int:
    """Replace, in place, every depthwise convolution of `model` that `takes_depthwise_gradients` by a
    `DepthwiseConv2d` holding the same weight, with its `triton` choice; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if takes_depthwise_gradients(child):
                replacement = DepthwiseConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                              child.padding, child.dilation, child.groups, bias=False,
                                              device=child.weight.device, dtype=child.weight.dtype)
                replacement.weight = child.weight
                replacement.triton = triton
                setattr(parent, name, replacement)
                replaced += 1
    return replaced
