"""What inductor's options buy the default training step at one batch size, beside the compiled timm peer (issue 14).

    python benchmarks/compile_options.py --stream rgb --batch 128 --parallel 3

Each variant is `mateffnet train`'s default step (torch.compile + one CUDA graph, bf16, channels_last) with
extra options for torch.compile (inductor's config), e.g. coordinate-descent tuning of the fused kernels'
block sizes or autotuning of the pointwise / reduction kernels. Every variant and the peer (plain timm
`efficientnet_b0` per frame, `torch.compile` with its defaults, as a user writes it) first compiles in a child
process, `--parallel` at a time, to fill the on-disk inductor cache (TORCHINDUCTOR_CACHE_DIR); then this
process measures each one after another, alone on the GPU, from that cache, and prints clips/s, frames/s,
peak memory, the child's cold compile seconds, and the ratio to the peer. `--profile` then prints where the
GPU's time goes in the fastest variant's step (convolution libraries vs the compiler's Triton kernels).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import make_peer, make_step, measure, repeat  # noqa: E402

from mateffnet.engine import step as step_module  # noqa: E402

VARIANTS = {  # name → torch.compile options beyond the default step's own
    "default": {},
    "coordinate-descent": {"coordinate_descent_tuning": True},  # tunes each fused kernel's block sizes
    "pointwise-autotune": {"max_autotune_pointwise": True},  # benchmarks configs of pointwise/reduction kernels
    "conv1x1-mm": {"conv_1x1_as_mm": True},  # 1x1 convolutions lowered to matmuls the compiler can fuse
    "coordinate-descent+conv1x1-mm": step_module.TUNING_OPTIONS,  # train.compile_tuning
    # those matmuls as Triton templates timed against cuBLAS, with the neighbouring BN / SiLU / SE fused into them
    "conv1x1-mm+gemm-autotune": {"conv_1x1_as_mm": True, "max_autotune_gemm": True},
    "max-autotune": {"max_autotune": True},  # Triton convolution / matmul templates against cuDNN / cuBLAS
}
PEER = "peer: timm compiled"


def build(name: str, args):
    """(step, inputs) of one row: the peer, or the default step with the variant's options."""
    channels = 3 if args.stream == "rgb" else 2 * args.flow_length
    if name == PEER:
        frames = torch.randn(args.batch * args.segments, channels, 224, 224, device="cuda")
        inputs = (frames.contiguous(memory_format=torch.channels_last),
                  torch.randint(0, 101, (args.batch * args.segments,), device="cuda"))
        return make_peer(channels, compiled=True), inputs
    inputs = (torch.randint(0, 256, (args.batch, args.segments, channels, 224, 224), dtype=torch.uint8, device="cuda"),
              torch.randint(0, 101, (args.batch,), device="cuda"))
    step = make_step(args.stream, args, "default")
    # the default step's forward, compiled with the variant's options on top of its own (nothing compiled yet)
    step.forward = torch.compile(step.net, options={**step_module.COMPILE_OPTIONS, **VARIANTS[name]})
    return step, inputs


def row(name: str, args, seconds: float) -> dict:
    torch.cuda.reset_peak_memory_stats()
    step = None
    try:
        step, inputs = build(name, args)
        (rate,), first = measure(step, repeat(*inputs), seconds, args.warmup)
        used = getattr(step, "kind", "")
        return {"clips": rate * args.batch, "first": first, "used": used,
                "peak": torch.cuda.max_memory_allocated() / 2**30}
    except Exception as error:  # noqa: BLE001 - one variant that fails must not end the table
        return {"failed": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:150] if str(error) else ''}"}
    finally:
        del step
        inputs = None
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()


def warm(names: list[str], args) -> dict[str, str]:
    """Each row's first step in a child process, `args.parallel` at a time; name → its cold first-step seconds."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` below kills the children
    started, running, cold = time.perf_counter(), {}, {}

    def reap():
        for name, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"failed": f"exit {process.returncode}"}
            cold[name] = f"{result['first']:.0f}" if "first" in result else result["failed"]
            print(f"  compiled {name}: {cold[name]} (at {time.perf_counter() - started:.0f} s)", flush=True)

    try:
        for name in names:
            while len(running) >= args.parallel:
                time.sleep(1)
                reap()
            log = tempfile.TemporaryFile("w+")
            command = [sys.executable, __file__, "--child", name, "--stream", args.stream, "--batch", str(args.batch)]
            running[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log
        while running:
            time.sleep(1)
            reap()
    finally:
        for name, (process, _) in running.items():
            process.kill()
            print(f"  killed unfinished: {name} after {time.perf_counter() - started:.0f} s", flush=True)
    return cold


def profile(name: str, args) -> None:
    step, inputs = build(name, args)
    for _ in range(3):
        step(*inputs)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(*inputs)
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    events = [event for event in prof.key_averages() if event.self_device_time_total > 0]
    for event in events:
        kinds[kernel_kind(event.key)] = kinds.get(kernel_kind(event.key), 0.0) + event.self_device_time_total
    total = sum(kinds.values())
    print(f"\nGPU time of one step of '{name}' by kind ({total / 3e3:.1f} ms a step):")
    for kind, micros in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"  {kind}: {micros / 3e3:.1f} ms ({micros / total:.0%})")
    print("\nlongest kernels:")
    for event in sorted(events, key=lambda e: -e.self_device_time_total)[:25]:
        print(f"  {event.self_device_time_total / 3e3:7.2f} ms  x{event.count // 3:<4} {event.key[:110]}")


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    if "triton" in lowered:
        return "compiler's Triton kernels"
    if any(word in lowered for word in ("conv", "cudnn", "xmma", "dgrad", "wgrad", "implicit", "depthwise")):
        return "convolution library (cuDNN)"
    if any(word in lowered for word in ("gemm", "cutlass", "sm90", "nvjet", "cublas")):
        return "matrix multiplication library"
    if "memcpy" in lowered or "memset" in lowered:
        return "copies and fills"
    return "other (eager ATen kernels)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=["rgb", "flow"], default="rgb")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=3, help="child processes compiling at once")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--skip-warm", action="store_true", help="measure on the cache as it is")
    parser.add_argument("--warm-only", action="store_true", help="fill the cache, measure nothing")
    parser.add_argument("--no-peer-warm", action="store_true",
                        help="warm only the variants (an earlier run on this machine warmed the peer)")
    parser.add_argument("--no-peer", action="store_true",
                        help="leave the peer out: ratios are then to the default variant (tuning vs default)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.compile_once = False
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    torch.backends.cudnn.benchmark = True  # as `mateffnet train` and timm's train.py set it
    if args.child:
        print(json.dumps(row(args.child, args, seconds=0.0)), flush=True)
        return 0
    names = args.variants if args.no_peer else [PEER, *args.variants]
    reference = names[0]
    cold = {} if args.skip_warm else warm(args.variants if args.no_peer_warm else names, args)
    if args.warm_only:
        return 0
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.stream}, batch {args.batch} clips × "
          f"{args.segments} frames, inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')}\n")
    print(f"| step | inductor options | clips/s | frames/s | peak GPU memory (GiB) | cold compile (s) | ÷ {reference} |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results = {}
    for name in names:
        results[name] = result = row(name, args, args.seconds)
        base = results[reference].get("clips")
        options = "torch.compile defaults" if name == PEER else json.dumps(VARIANTS[name]) or "{}"
        if "failed" in result:
            print(f"| {name} | {options} | failed: {result['failed']} | | | {cold.get(name, '')} | |", flush=True)
            continue
        ratio = f"{result['clips'] / base:.3f}" if base else ""
        used = "" if result["used"] in ("", "compiled + CUDA graph") else f" ({result['used']})"
        print(f"| {name}{used} | {options} | {result['clips']:.1f} | {result['clips'] * args.segments:.0f} | "
              f"{result['peak']:.1f} | {cold.get(name, '')} | {ratio} |", flush=True)
    if args.profile:
        fastest = max(args.variants, key=lambda name: results[name].get("clips", 0.0))
        profile(fastest, args)
        if fastest != "default":
            profile("default", args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
