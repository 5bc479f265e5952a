"""What a wider cuDNN algorithm search buys EfficientNet-B0's convolutions in training (issue 14).

    python benchmarks/cudnn_search.py --stream rgb --batch 128 --limits 10 0

With `cudnn.benchmark` on, PyTorch times cuDNN's candidate algorithms for every new convolution shape and keeps
the fastest; `torch.backends.cudnn.benchmark_limit` caps how many it tries (10 by default, 0 = all of them). For
each limit, in a fresh process (cuDNN's choices live for one process), this trains plain timm `efficientnet_b0`
per frame, eagerly (bf16 autocast, channels_last, SGD with momentum: the convolutions are the ones the compiled
step calls too), and prints the search's wall time, the step's time, and the GPU time of the convolutions
(forward and both gradients) by kind (depthwise, 1x1, full) from the profiler, with ratios to the first limit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import make_peer  # noqa: E402

KINDS = ("depthwise", "1x1", "full")


def convolution_kind(weight_shape: list[int]) -> str:
    _, in_per_group, height, _ = weight_shape
    if height == 1:
        return "1x1"
    return "depthwise" if in_per_group == 1 else "full"


def weight_shape(event) -> list[int] | None:
    """The weight's shape among a profiled convolution op's recorded input shapes (forward: input, weight, …;
    backward: grad_output, input, weight, …)."""
    shapes = event.input_shapes
    index = 1 if event.key in ("aten::convolution", "aten::cudnn_convolution") else 2
    if len(shapes) > index and len(shapes[index]) == 4:
        return shapes[index]
    return None


def child(args) -> dict:
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.benchmark_limit = args.child_limit
    channels = 3 if args.stream == "rgb" else 2 * args.flow_length
    frames = args.batch * args.segments
    inputs = torch.randn(frames, channels, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 101, (frames,), device="cuda")
    step = make_peer(channels, compiled=False)
    started = time.perf_counter()
    step(inputs, labels)
    torch.cuda.synchronize()
    search = time.perf_counter() - started
    for _ in range(3):
        step(inputs, labels)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step(inputs, labels)
    end.record()
    torch.cuda.synchronize()
    step_ms = start.elapsed_time(end) / args.steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
                                record_shapes=True) as profiler:
        for _ in range(3):
            step(inputs, labels)
        torch.cuda.synchronize()
    kinds = dict.fromkeys(KINDS, 0.0)
    for event in profiler.key_averages(group_by_input_shape=True):
        if event.key not in ("aten::convolution", "aten::convolution_backward"):
            continue
        shape = weight_shape(event)
        if shape is not None:
            kinds[convolution_kind(shape)] += event.device_time_total / 3e3  # µs over 3 steps → ms a step
    return {"search_s": search, "step_ms": step_ms, "peak_gib": torch.cuda.max_memory_allocated() / 2**30, **kinds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=["rgb", "flow"], default="rgb")
    parser.add_argument("--batch", type=int, default=128, help="clips; frames = batch × segments")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--limits", type=int, nargs="+", default=[10, 0], help="cudnn.benchmark_limit values; 0 = all")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child-limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    if args.child_limit is not None:
        print(json.dumps(child(args)), flush=True)
        return 0
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{args.stream}, {args.batch * args.segments} frames a step, timm efficientnet_b0 eager, bf16\n")
    print("| cudnn.benchmark_limit | search (s) | step (ms) | depthwise (ms) | 1x1 (ms) | full (ms) | "
          "all convolutions (ms) | step: speed-up over the first limit | convolutions: speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for limit in args.limits:
        command = [sys.executable, __file__, "--child-limit", str(limit), "--stream", args.stream,
                   "--batch", str(args.batch), "--segments", str(args.segments), "--flow-length", str(args.flow_length),
                   "--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"| {limit} | failed: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1][:150]} "
                  "| | | | | | | |", flush=True)
            continue
        result = json.loads(lines[-1])
        convolutions = sum(result[kind] for kind in KINDS)
        first = first or {"step": result["step_ms"], "convolutions": convolutions}
        print(f"| {limit or 'all'} | {result['search_s']:.1f} | {result['step_ms']:.2f} | {result['depthwise']:.2f} | "
              f"{result['1x1']:.2f} | {result['full']:.2f} | {convolutions:.2f} | "
              f"{first['step'] / result['step_ms']:.3f} | {first['convolutions'] / convolutions:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
