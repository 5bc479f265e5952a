"""EfficientNet-B0's depthwise convolutions: cuDNN beside the Triton kernels of `mateffnet.models.depthwise`.

    python benchmarks/depthwise.py                     # batch 1024 frames (128 clips x 8), bf16, channels_last
    python benchmarks/depthwise.py --frames 256 --repeats 3

For each of the 16 depthwise layers of timm's efficientnet_b0 at 224x224 (its input shape found by running the
model once), the forward pass and the backward pass (input and weight gradients) of cuDNN (`F.conv2d` with
groups = channels, as the model calls it; `cudnn.benchmark` on, as `mateffnet train` sets it) and of the Triton
op, on the same bf16 channels_last tensors, in milliseconds (median of `--repeats` rounds of
`triton.testing.do_bench`, with the fastest and slowest round); then the sums over the layers and the ratio.
Before timing, every layer's outputs and gradients are compared with cuDNN's (largest difference relative to the
largest value). Then, with `--step`, the whole forward and backward of the backbone (compiled, per frame) with and
without the kernels, which says what they are worth in a training step.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F


def layer_shapes(frames: int) -> list[tuple[str, tuple[int, int, int, int], int, int]]:
    """(name, input shape (N, C, H, W), kernel, stride) of every depthwise layer of efficientnet_b0 at 224."""
    from mateffnet.models.backbones import create_backbone
    from mateffnet.models.depthwise import replaceable

    net = create_backbone("efficientnet_b0")
    shapes = []
    hooks = [module.register_forward_hook(
        lambda m, inputs, _, name=name: shapes.append((name, (frames, *inputs[0].shape[1:]), m.kernel_size[0],
                                                       m.stride[0])))
             for name, module in net.named_modules() if replaceable(module)]
    with torch.no_grad():
        net.forward_features(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return shapes


def timed(function, repeats: int) -> tuple[float, float, float]:
    from triton.testing import do_bench

    rounds = [do_bench(function, warmup=10, rep=50) for _ in range(repeats)]
    return statistics.median(rounds), min(rounds), max(rounds)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12)).item()


def layer_rows(frames: int, repeats: int) -> list[str]:
    from mateffnet.models.depthwise import depthwise_conv2d

    rows, totals = [], {"cudnn fwd": 0.0, "triton fwd": 0.0, "cudnn bwd": 0.0, "triton bwd": 0.0}
    for name, shape, kernel, stride in layer_shapes(frames):
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(shape[1], 1, kernel, kernel, device="cuda", dtype=torch.bfloat16) * 0.1
        x.requires_grad_()
        weight.requires_grad_()

        def cudnn():
            return F.conv2d(x, weight, stride=stride, padding=kernel // 2, groups=shape[1])

        def triton_op():
            return depthwise_conv2d(x, weight, stride)

        want, got = cudnn(), triton_op()
        grad = torch.randn_like(want)
        want_grads = torch.autograd.grad(want, (x, weight), grad)
        got_grads = torch.autograd.grad(got, (x, weight), grad)
        errors = [relative_error(got, want)] + [relative_error(g, w) for g, w in zip(got_grads, want_grads)]
        times = {}
        for label, function in (("cudnn", cudnn), ("triton", triton_op)):
            out = function()
            times[f"{label} fwd"] = timed(function, repeats)
            times[f"{label} bwd"] = timed(lambda: torch.autograd.grad(out, (x, weight), grad, retain_graph=True),
                                          repeats)
        for key in totals:
            totals[key] += times[key][0]
        cells = " | ".join(f"{times[key][0]:.3f} ({times[key][1]:.3f}–{times[key][2]:.3f})" for key in totals)
        rows.append(f"| {name} | {shape[1]}×{shape[2]}×{shape[3]} | {kernel} | {stride} | {cells} | "
                    f"{times['cudnn fwd'][0] / times['triton fwd'][0]:.2f} | "
                    f"{times['cudnn bwd'][0] / times['triton bwd'][0]:.2f} | {max(errors):.1e} |")
    rows.append(f"| **all 16 layers** | | | | {totals['cudnn fwd']:.3f} | {totals['triton fwd']:.3f} | "
                f"{totals['cudnn bwd']:.3f} | {totals['triton bwd']:.3f} | "
                f"**{totals['cudnn fwd'] / totals['triton fwd']:.2f}** | "
                f"**{totals['cudnn bwd'] / totals['triton bwd']:.2f}** | |")
    return rows


def step_rows(frames: int, repeats: int) -> list[str]:
    """Forward + backward of the compiled backbone on `frames` frames, cuDNN's depthwise layers against the kernels."""
    from mateffnet.models.backbones import create_backbone
    from mateffnet.models.depthwise import use_triton_depthwise

    rows, base = [], None
    for label in ("cuDNN depthwise", "Triton depthwise"):
        torch.manual_seed(0)
        net = create_backbone("efficientnet_b0").cuda().to(memory_format=torch.channels_last).train()
        if label.startswith("Triton"):
            use_triton_depthwise(net)
        compiled = torch.compile(net.forward_features)
        x = torch.randn(frames, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = compiled(x).float().square().mean()
            loss.backward()

        step()
        median, fastest, slowest = timed(step, repeats)
        base = base or median
        rows.append(f"| {label} | {median:.2f} ({fastest:.2f}–{slowest:.2f}) | {frames / median * 1000:,.0f} | "
                    f"{base / median:.3f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024, help="frames per batch (clips × segments)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step", action="store_true", help="also time the compiled backbone's forward + backward")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU (the kernels' correctness on the CPU: tests/models/test_depthwise.py)")
        return 1
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.frames} frames, bf16, channels_last; "
          f"ms: median (fastest–slowest) of {args.repeats} rounds\n")
    print("| layer | C×H×W in | K | stride | cuDNN fwd | Triton fwd | cuDNN bwd | Triton bwd | fwd: cuDNN ÷ Triton | "
          "bwd: cuDNN ÷ Triton | largest difference |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in layer_rows(args.frames, args.repeats):
        print(row, flush=True)
    if args.step:
        print("\n| backbone forward + backward, compiled | ms | frames/s | ÷ cuDNN |\n|---|---:|---:|---:|")
        for row in step_rows(args.frames, args.repeats):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
