"""The input gradient of EfficientNet-B0's depthwise convolutions: cuDNN's dgrad vs a forward convolution.

    python benchmarks/depthwise_grad.py --frames 1024

For a stride-1 convolution with "same" padding, the gradient with respect to its input is the forward
convolution of the output's gradient with the spatially flipped kernel (for a depthwise one, channel by channel).
On the H200 the compiled training step spends more GPU time in cuDNN's depthwise dgrad kernels than in their
forward ones (BENCHMARKS.md); this prints, per stride-1 depthwise layer at `--frames` frames (bf16,
channels_last), the forward convolution, cuDNN's dgrad, the flipped forward, their ratio and the largest
difference between the two gradients. A second table does the same for the four stride-2 layers with the
polyphase forward of `models/depthwise.py` (one depthwise convolution with 4 sub-kernels per channel, then
the interleave; the convolution alone in its own column): eager, so the interleave is a copy of its own,
which inside the compiled step inductor may fuse into the next kernel.
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
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{args.frames} frames, bf16, channels_last; ms, median of 3 rounds\n")
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
    strided(args)
    return 0


def strided(args) -> None:
    from mateffnet.models.depthwise import _phases, _polyphase_input_gradient

    print("\n| layer | C×H×W in | k | forward | cuDNN dgrad | polyphase (convolution + interleave) | its convolution alone "
          "| dgrad ÷ polyphase | largest difference |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0, 0.0]
    for name, channels, height, width, kernel, padding in depthwise_layers(2):
        shape = (args.frames, channels, height, width)
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=torch.bfloat16)
        output = F.conv2d(x, weight, None, 2, padding, 1, channels)
        grad = torch.randn_like(output)
        geometry = _phases(kernel, 2, padding, height, output.shape[2])
        kernels = torch.randn(channels * 4, 1, geometry.length, geometry.length, device="cuda", dtype=torch.bfloat16)

        def forward():
            return F.conv2d(x, weight, None, 2, padding, 1, channels)

        def dgrad():
            return torch.ops.aten.convolution_backward(grad, x, weight, None, [2, 2], [padding, padding], [1, 1], False,
                                                       [0, 0], channels, [True, False, False])[0]

        def polyphase():
            return _polyphase_input_gradient(grad, weight, x, (2, 2), (padding, padding))

        def convolution_alone():
            return F.conv2d(grad, kernels, None, 1, geometry.padding, 1, channels)

        times = [milliseconds(function, args.repeats) for function in (forward, dgrad, polyphase, convolution_alone)]
        reference, candidate = dgrad().float(), polyphase().float()
        difference = ((reference - candidate).abs().max() / reference.abs().max()).item()
        totals = [total + time for total, time in zip(totals, times)]
        print(f"| {name} | {channels}×{height}×{width} | {kernel} | {times[0]:.3f} | {times[1]:.3f} | {times[2]:.3f} | "
              f"{times[3]:.3f} | {times[1] / times[2]:.2f} | {difference:.1e} |", flush=True)
    print(f"| **all stride-2 layers** | | | {totals[0]:.3f} | {totals[1]:.3f} | {totals[2]:.3f} | {totals[3]:.3f} | "
          f"**{totals[1] / totals[2]:.2f}** | |")


if __name__ == "__main__":
    raise SystemExit(main())
