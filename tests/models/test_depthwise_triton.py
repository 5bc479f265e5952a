import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Triton's interpreter runs the kernels on CPU tensors; it reads TRITON_INTERPRET when triton is imported.
_INTERPRETER_CHECK = textwrap.dedent(
    """
    import torch
    from mateffnet.models.depthwise_triton import depthwise_input_grad_triton

    torch.manual_seed(0)
    cases = [  # kernel, stride, padding, size; even and odd sizes, asymmetric strides and kernels
        ((3, 3), (2, 2), (1, 1), (9, 8)), ((5, 5), (2, 2), (2, 2), (11, 10)), ((3, 3), (1, 1), (1, 1), (7, 6)),
        ((5, 5), (1, 1), (2, 2), (6, 7)), ((3, 3), (3, 3), (1, 1), (10, 11)), ((3, 3), (2, 2), (0, 0), (9, 9)),
        ((3, 5), (2, 1), (1, 2), (8, 9)), ((2, 2), (2, 2), (0, 0), (7, 6)),
    ]
    for kernel, stride, padding, size in cases:
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=layout)
            weight = torch.randn(5, 1, *kernel, dtype=torch.float64)
            grad = torch.randn_like(torch.nn.functional.conv2d(x, weight, None, stride, padding, 1, 5))
            want_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], 5, [True, False, False])[0]
            poisoned = torch.full_like(x, float("nan"))  # in x's layout; every element must be written
            got_x = depthwise_input_grad_triton(grad, weight, poisoned, stride, padding)
            case = (kernel, stride, padding, size, layout)
            torch.testing.assert_close(got_x, want_x, rtol=1e-5, atol=1e-5, msg=str(case))
    print("ok")
    """
)


def test_the_triton_input_gradient_equals_the_library_gradient_in_triton_s_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(SRC))
    result = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
