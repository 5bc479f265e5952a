import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mateffnet.models.backbones import create_backbone
from mateffnet.models.depthwise import TritonDepthwiseConv2d, depthwise_conv2d, replaceable, use_triton_depthwise

SRC = Path(__file__).resolve().parents[2] / "src"


def test_every_depthwise_convolution_of_efficientnet_b0_is_swapped_and_the_model_trains_the_same():
    torch.manual_seed(0)
    plain = create_backbone("efficientnet_b0").train()
    swapped = copy.deepcopy(plain)
    assert use_triton_depthwise(swapped) == 16  # one per MBConv block: 1 + 2 + 2 + 3 + 3 + 4 + 1
    assert sum(isinstance(m, TritonDepthwiseConv2d) for m in swapped.modules()) == 16
    assert list(swapped.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    loss_plain = plain.forward_features(x).square().mean()
    loss_swapped = swapped.forward_features(x).square().mean()
    loss_plain.backward()
    loss_swapped.backward()
    torch.testing.assert_close(loss_swapped, loss_plain)
    for (name, a), (_, b) in zip(plain.named_parameters(), swapped.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_under_autocast_the_op_gets_input_and_weight_in_its_dtype_as_the_kernels_need(monkeypatch):
    from mateffnet.models import depthwise

    torch.manual_seed(0)
    plain = create_backbone("efficientnet_b0").eval()
    swapped = copy.deepcopy(plain)
    use_triton_depthwise(swapped)
    seen = []

    def spy(x, weight, stride):
        seen.append((x.dtype, weight.dtype))
        return depthwise_conv2d(x, weight, stride)

    monkeypatch.setattr(depthwise, "depthwise_conv2d", spy)
    x = torch.randn(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = plain.forward_features(x), swapped.forward_features(x)
    assert seen == [(torch.bfloat16, torch.bfloat16)] * 16  # else `supported` is False and cuDNN runs instead
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)


def test_convolutions_the_kernels_do_not_compute_are_left_as_they_are():
    def dw(**kwargs):
        return nn.Conv2d(8, 8, kwargs.pop("k", 3), groups=kwargs.pop("groups", 8), bias=kwargs.pop("bias", False),
                         **{"padding": 1, **kwargs})

    assert replaceable(dw())
    others = [dw(bias=True), dw(groups=4), dw(padding=0), dw(dilation=2, padding=2), dw(stride=3), dw(k=1, padding=0),
              dw(padding_mode="reflect"), nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)]
    net = nn.Sequential(*others)
    assert not any(replaceable(m) for m in others) and use_triton_depthwise(net) == 0


def test_the_op_is_registered_for_autograd_and_the_compiler():
    x = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(6, 1, 5, 5, requires_grad=True)
    torch.library.opcheck(depthwise_conv2d, (x, weight, 2))
    compiled = torch.compile(lambda a, b: depthwise_conv2d(a, b, 2).sum(), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, weight), F.conv2d(x, weight, stride=2, padding=2, groups=6).sum())


_INTERPRETER_CHECK = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from mateffnet.models.depthwise import depthwise_conv2d, supported, triton_weight_grad

    torch.manual_seed(0)
    cases = [(2, 24, 9, 11, 3, 1), (2, 40, 10, 7, 5, 2), (1, 3, 6, 6, 3, 2), (2, 70, 7, 9, 5, 1), (1, 8, 5, 5, 7, 2)]
    for n, c, h, w, k, s in cases:
        for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
            for channels_last in (True, False):
                x = torch.randn(n, c, h, w).to(dtype)
                x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
                weight = torch.randn(c, 1, k, k).to(dtype).requires_grad_()
                assert supported(x, weight, s)
                y = depthwise_conv2d(x, weight, s)
                assert y.is_contiguous(memory_format=torch.channels_last)
                grad = torch.randn(y.shape).to(dtype)
                gx, gw = torch.autograd.grad(y, (x, weight), grad)
                x32, w32 = x.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
                ref = F.conv2d(x32, w32, stride=s, padding=k // 2, groups=c)
                rx, rw = torch.autograd.grad(ref, (x32, w32), grad.float())
                for name, got, want in (("output", y, ref), ("input grad", gx, rx), ("weight grad", gw, rw)):
                    scale = want.abs().max().item()
                    error = (got.float() - want).abs().max().item()
                    assert got.dtype == dtype and got.shape == want.shape, (name, got.dtype, got.shape)
                    assert error <= tolerance * scale, (n, c, h, w, k, s, dtype, channels_last, name, error, scale)
    from mateffnet.models import depthwise

    for n, c, h, w, k, s in [(2, 70, 9, 11, 3, 2), (2, 40, 7, 10, 5, 1)]:  # every tiling a GPU may pick
        x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
        weight = torch.randn(c, 1, k, k, requires_grad=True)
        ref = F.conv2d(x, weight, stride=s, padding=k // 2, groups=c)
        grad = torch.randn(ref.shape)
        want = (ref, *torch.autograd.grad(ref, (x, weight), grad))
        for choice in range(8):
            depthwise._launch_fastest = lambda key, configs, launch: launch(configs[min(choice, len(configs) - 1)])
            y = depthwise_conv2d(x, weight, s)
            for got, expected in zip((y, *torch.autograd.grad(y, (x, weight), grad)), want):
                assert (got - expected).abs().max() <= 1e-4 * expected.abs().max(), (n, c, h, w, k, s, choice)
    x = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(6, 1, 5, 5, requires_grad=True)
    torch.library.opcheck(depthwise.depthwise_conv2d, (x, weight, 2))  # the kernels' strides as the fakes say
    grad = torch.randn(2, 6, 5, 4).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(depthwise.depthwise_conv2d_backward, (grad, x.detach(), weight.detach(), 2))
    x = torch.randn(3, 5, 8, 6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 5, 4, 3).contiguous(memory_format=torch.channels_last)
    whole = triton_weight_grad(x, grad, 3, 2)
    for rows in (1, 5, 12):  # chunks of output rows that do not divide the 12 rows, and one chunk for all
        torch.testing.assert_close(triton_weight_grad(x, grad, 3, 2, rows=rows), whole, rtol=1e-5, atol=1e-5)
    print("ok")
    """
)


@pytest.mark.slow
def test_the_triton_kernels_equal_conv2d_and_its_gradients_in_triton_s_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(SRC))
    result = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_efficientnet_b0_with_the_kernels_trains_like_cudnn_under_the_compiler(monkeypatch):
    from mateffnet.models import depthwise

    launched = []
    for name in ("triton_forward", "triton_input_grad", "triton_weight_grad"):
        original = getattr(depthwise, name)
        monkeypatch.setattr(depthwise, name, lambda *a, _f=original, _n=name, **kw: launched.append(_n) or _f(*a, **kw))
    torch.manual_seed(0)
    plain = create_backbone("efficientnet_b0").cuda().to(memory_format=torch.channels_last).train()
    swapped = copy.deepcopy(plain)
    use_triton_depthwise(swapped)
    x = torch.randn(16, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    losses, grads = [], []
    for net, features in ((plain, plain.forward_features), (swapped, torch.compile(swapped.forward_features))):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = features(x).float().square().mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert sorted(set(launched)) == ["triton_forward", "triton_input_grad", "triton_weight_grad"]
    assert launched.count("triton_forward") == 16
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=0)
    assert (grads[1] - grads[0]).norm() < 0.05 * grads[0].norm()
