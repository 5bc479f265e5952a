"""The input gradient of EfficientNet-B0's depthwise convolutions: cuDNN's dgrad vs models/depthwise.py's.

    python benchmarks/depthwise_grad.py --frames 1024

For a stride-1 convolution with "same" padding, the gradient with respect to its input is the forward
convolution of the output's gradient with the spatially flipped kernel (for a depthwise one, channel by channel);
the first table prints, per stride-1 depthwise layer at `--frames` frames (bf16, channels_last), the forward
convolution, cuDNN's dgrad, the flipped forward, their ratio and the largest difference between the two
gradients. The second does the same for the four stride-2 layers with the Triton kernel of
`models/depthwise_triton.py`; `--sweep` adds its block sizes on each of them.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F


def depthwise_layers(stride: int) -> list[tuple[str, int, int, int, int, int]]:
    """(name, channels, height, width, kernel, padding) of timm efficientnet_b0's depthwise layers of `stride` at 224."""
    import timm

    model = timm.create_model("efficientnet_b0").eval()
    found = []

    def hook(name):
        def record(module, inputs, _):
            _, channels, height, width = inputs[0].shape
            found.append((name, channels, height, width, module.kernel_size[0], module.padding[0]))
        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups == module.in_channels > 1 and module.stride == (stride, stride):
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    return found


def milliseconds(function, repeats: int) -> float:
    for _ in range(3):
        function()
    rounds = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            function()
        end.record()
        torch.cuda.synchronize()
        rounds.append(start.elapsed_time(end) / repeats)
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tables", nargs="+", default=["stride-1", "stride-2"], choices=["stride-1", "stride-2"])
    parser.add_argument("--sweep", action="store_true", help="also time the Triton kernel's block sizes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{args.frames} frames, bf16, channels_last; ms, median of 3 rounds\n")
    if "stride-1" in args.tables:
        stride_one(args)
    if "stride-2" in args.tables:
        strided(args)
    return 0


def stride_one(args) -> None:
    print("| layer | C×H×W | k | forward | cuDNN dgrad | flipped forward | dgrad ÷ flipped | largest difference |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0]
    for name, channels, height, width, kernel, padding in depthwise_layers(1):
        shape = (args.frames, channels, height, width)
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=torch.bfloat16)
        flipped = weight.flip(2, 3)

        def forward():
            return F.conv2d(x, weight, None, 1, padding, 1, channels)

        def dgrad():
            return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [padding, padding], [1, 1], False,
                                                       [0, 0], channels, [True, False, False])[0]

        def flipped_forward():
            return F.conv2d(grad, flipped, None, 1, padding, 1, channels)

        times = [milliseconds(function, args.repeats) for function in (forward, dgrad, flipped_forward)]
        reference, candidate = dgrad().float(), flipped_forward().float()
        difference = ((reference - candidate).abs().max() / reference.abs().max()).item()
        totals = [total + time for total, time in zip(totals, times)]
        print(f"| {name} | {channels}×{height}×{width} | {kernel} | {times[0]:.3f} | {times[1]:.3f} | {times[2]:.3f} | "
              f"{times[1] / times[2]:.2f} | {difference:.1e} |", flush=True)
    print(f"| **all stride-1 layers** | | | {totals[0]:.3f} | {totals[1]:.3f} | {totals[2]:.3f} | "
          f"**{totals[1] / totals[2]:.2f}** | |")


def strided(args) -> None:
    from mateffnet.models.depthwise_triton import depthwise_input_grad_triton

    print("\n| layer | C×H×W in | k | forward | cuDNN dgrad | Triton dgrad | dgrad ÷ Triton | largest difference |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0]
    sweeps = []
    for name, channels, height, width, kernel, padding in depthwise_layers(2):
        shape = (args.frames, channels, height, width)
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=torch.bfloat16)
        grad = torch.randn_like(F.conv2d(x, weight, None, 2, padding, 1, channels))
        out = torch.empty_like(x)

        def forward():
            return F.conv2d(x, weight, None, 2, padding, 1, channels)

        def dgrad():
            return torch.ops.aten.convolution_backward(grad, x, weight, None, [2, 2], [padding, padding], [1, 1], False,
                                                       [0, 0], channels, [True, False, False])[0]

        def triton_dgrad(**tuning):
            return depthwise_input_grad_triton(grad, weight, out, (2, 2), (padding, padding), **tuning)

        times = [milliseconds(function, args.repeats) for function in (forward, dgrad, triton_dgrad)]
        difference = relative_difference(dgrad(), triton_dgrad())
        totals = [total + time for total, time in zip(totals, times)]
        print(f"| {name} | {channels}×{height}×{width} | {kernel} | {times[0]:.3f} | {times[1]:.3f} | {times[2]:.3f} | "
              f"{times[1] / times[2]:.2f} | {difference:.1e} |", flush=True)
        if args.sweep:
            sweeps.append((name, {f"cells {b}, channels {c}, warps {w}": milliseconds(
                lambda: triton_dgrad(block_cells=b, block_channels=c, num_warps=w), args.repeats)
                for b, c, w in SWEEP}))
    print(f"| **all stride-2 layers** | | | {totals[0]:.3f} | {totals[1]:.3f} | {totals[2]:.3f} | "
          f"**{totals[1] / totals[2]:.2f}** | |")
    for name, timings in sweeps:
        ranked = sorted(timings.items(), key=lambda item: item[1])
        print(f"{name}: " + "; ".join(f"{config} {ms:.3f}" for config, ms in ranked[:4])
              + f"; slowest {ranked[-1][0]} {ranked[-1][1]:.3f}")


# Triton input-gradient block sizes (cells, channels, warps) for --sweep; the kernel's default is the second.
SWEEP = ((16, 64, 4), (32, 64, 4), (64, 64, 4), (128, 64, 4), (32, 32, 4), (64, 32, 4), (32, 128, 4),
         (32, 64, 8), (64, 64, 8), (64, 128, 8))


def relative_difference(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    reference, candidate = reference.float(), candidate.float()
    return ((reference - candidate).abs().max() / reference.abs().max()).item()


if __name__ == "__main__":
    raise SystemExit(main())
