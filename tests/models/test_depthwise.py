import copy
import shutil

import pytest
import torch
from torch import nn

from mateffnet.models import create_backbone
from mateffnet.models.depthwise import DepthwiseConv2d, use_depthwise_gradients


def _gradients(module, x, seed=1):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y))
    return (y, x.grad, *(parameter.grad for parameter in module.parameters()))


def _library_and_ours(library: nn.Conv2d) -> tuple[nn.Conv2d, DepthwiseConv2d]:
    ours = copy.deepcopy(library)
    ours.__class__ = DepthwiseConv2d
    return library, ours


@pytest.mark.parametrize("kernel, padding, dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2), (3, 0, 1), (5, 1, 1)])
def test_the_input_gradient_as_a_forward_convolution_equals_the_library_gradient(kernel, padding, dilation):
    torch.manual_seed(0)
    library, ours = _library_and_ours(nn.Conv2d(6, 6, kernel, 1, padding, dilation, groups=6, bias=False).double())
    x = torch.randn(2, 6, 11, 9, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    for expected, got in zip(_gradients(library, x), _gradients(ours, x)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (5, 2, 2), (3, 2, 0), (4, 2, 1), (5, 2, 3), (3, 3, 1), (2, 2, 0)])
@pytest.mark.parametrize("size", [(12, 10), (11, 9)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_off_cuda_the_strided_gradients_are_the_library_gradients(kernel, stride, padding, size, memory_format):
    torch.manual_seed(0)
    library, ours = _library_and_ours(nn.Conv2d(6, 6, kernel, stride, padding, groups=6, bias=False).double())
    x = torch.randn(2, 6, *size, dtype=torch.double).contiguous(memory_format=memory_format)
    expected, got = _gradients(library, x), _gradients(ours, x)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-12, atol=1e-12)
    assert got[1].is_contiguous(memory_format=memory_format)  # the input gradient keeps the input's layout


def test_under_autocast_the_gradients_come_back_in_the_parameters_dtype():
    torch.manual_seed(0)
    library, ours = _library_and_ours(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False))
    x = torch.randn(2, 8, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = _gradients(library, x), _gradients(ours, x)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == got[2].dtype == torch.float32
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("triton", [False, True])
def test_every_bias_free_depthwise_convolution_is_replaced_with_its_choice_and_the_weights_stay(triton):
    import timm

    torch.manual_seed(0)
    library = timm.create_model("efficientnet_b0", num_classes=0, global_pool="").double().train()
    ours = copy.deepcopy(library)
    replaced = use_depthwise_gradients(ours, triton=triton)
    depthwise = [name for name, module in library.named_modules()
                 if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1]
    assert replaced == len(depthwise) == 16
    modules = dict(ours.named_modules())
    assert all(type(modules[name]) is DepthwiseConv2d and modules[name].triton == triton
               for name in depthwise)
    assert sum(type(module) is nn.Conv2d for module in ours.modules()) == sum(
        type(module) is nn.Conv2d for module in library.modules()) - 16
    assert list(ours.state_dict()) == list(library.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), library.state_dict().values()))
    x, weights = torch.randn(3, 3, 64, 64, dtype=torch.double), torch.randn(3, 1280, 2, 2, dtype=torch.double)
    for model in (library, ours):
        (model(x) * weights).sum().backward()
    for (name, a), b in zip(library.named_parameters(), ours.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_the_backbones_use_them():
    backbone = create_backbone("efficientnet_b0")
    assert sum(type(module) is DepthwiseConv2d and module.triton for module in backbone.modules()) == 16


@pytest.mark.skipif(shutil.which("g++") is None or not torch._dynamo.is_dynamo_supported(),
                    reason="needs torch.compile on this Python and g++ for inductor's CPU kernels")
def test_torch_compile_traces_them_into_one_graph_with_the_eager_gradients():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 8, 5, 1, 2, groups=8, bias=False),
                          nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False))
    assert use_depthwise_gradients(block) == 2
    compiled = copy.deepcopy(block)
    x = torch.randn(2, 4, 12, 12)
    expected = _gradients(block, x)
    got = _gradients(torch.compile(compiled, fullgraph=True), x)  # fullgraph: a graph break is an error
    assert len(got) == len(expected) == 7
    for want, have in zip(expected, got):  # output, input gradient, every parameter's gradient
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("triton", [True, False])
def test_on_cuda_in_bf16_channels_last_the_gradients_are_cudnns(stride, triton):
    if triton:
        pytest.importorskip("triton")
    torch.manual_seed(0)
    library, ours = _library_and_ours(nn.Conv2d(32, 32, 5, stride, 2, groups=32, bias=False).cuda())
    ours.triton = triton
    x = torch.randn(8, 32, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected, got = _gradients(library, x), _gradients(ours, x)
    assert got[0].dtype == torch.bfloat16 and got[2].dtype == torch.float32
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_triton_gradients_compile_into_one_graph_and_a_cuda_graph():
    pytest.importorskip("triton")
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 16, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),
                          nn.Conv2d(16, 16, 5, 1, 2, groups=16, bias=False), nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False))
    assert use_depthwise_gradients(block) == 2
    block = block.cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, 4, 20, 20, device="cuda").contiguous(memory_format=torch.channels_last)
    expected = _gradients(block, x)
    compiled = torch.compile(copy.deepcopy(block), fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # reduce-overhead records a CUDA graph on a later call and replays it after
        compiled.zero_grad(set_to_none=True)
        got = [tensor.clone() for tensor in _gradients(compiled, x)]  # a replay overwrites the graph's outputs
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)


def test_where_the_triton_kernel_fails_the_library_gradient_takes_over_after_one_note(monkeypatch, capsys):
    pytest.importorskip("triton")
    from mateffnet.models import depthwise, depthwise_triton

    calls = []

    def fails(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("no kernel for this GPU\nsecond line")

    monkeypatch.setattr(depthwise_triton, "depthwise_input_grad_triton", fails)
    monkeypatch.setattr(depthwise, "_triton_failed", False)
    torch.manual_seed(0)
    weight = torch.randn(6, 1, 3, 3, dtype=torch.double)
    x = torch.randn(2, 6, 11, 10, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(nn.functional.conv2d(x, weight, None, 2, 1, 1, 6))
    want = torch.ops.aten.convolution_backward(grad, x, weight, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 6,
                                               [True, False, False])[0]
    for _ in range(2):
        got = depthwise.triton_or_library_input_grad(grad, weight, 11, 10, (2, 2), (1, 1))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert len(calls) == 1  # not tried again
    assert capsys.readouterr().err.splitlines() == [
        "note: the Triton depthwise input gradient failed (no kernel for this GPU); using the library's"]
