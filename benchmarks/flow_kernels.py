"""The fused TV-L1 kernels one by one (CUDA): time per iteration of each variant, checked against PyTorch.

    python benchmarks/flow_kernels.py [--pairs 128] [--height 256] [--width 340]

For every variant (iterations fused per launch, tile shape) it runs 12 iterations from the same state,
compares u and the duals with the plain-PyTorch iteration (max |difference|), then times 48
iterations. "GB/s" counts the minimum traffic of one unfused iteration (9 fp32 planes read, 6 written
= 60 bytes per pixel) over the time per iteration, so that variants compare on one scale; a device
copy's bandwidth is printed for reference. Also times the 5x5 median (the min/max network in PyTorch
and as a Triton kernel) and the whole flow at the TVL1_FAST schedule, with a profile of its kernels. For tuning on a GPU; CI never runs it.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from mateffnet.flow import TVL1_FAST
from mateffnet.flow.tvl1 import tvl1
from mateffnet.flow import tvl1_triton as fused
from mateffnet.flow.median_triton import median_filter_triton
from mateffnet.flow.tvl1 import median_filter, primal_dual_step
from mateffnet.flow.tvl1_params import TVL1Params

VARIANTS = [
    ("loads", 1, (16, 64, 4)),
    ("gather", 1, (16, 64, 4)),
    ("gather", 2, (16, 64, 4)),
    ("gather", 4, (32, 64, 8)),
    ("gather", 4, (64, 64, 16)),
    ("gather", 6, (32, 64, 8)),
    ("gather", 6, (64, 64, 16)),
    ("gather", 6, (64, 64, 32)),
    ("gather", 6, (32, 128, 16)),
    ("gather", 8, (64, 64, 16)),
    ("gather", 8, (64, 128, 32)),
    ("gather", 10, (64, 128, 32)),
    ("gather", 8, (128, 64, 32)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=340)
    args = parser.parse_args()
    n, h, w = args.pairs, args.height, args.width
    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__} · triton {fused.triton.__version__} · "
          f"{n} pairs of {w}x{h}")
    big = torch.empty(2**28, device="cuda")
    copy_ms = _time(lambda: big.clone(), 5)
    print(f"device copy: {2 * big.numel() * 4 / copy_ms / 1e6:.0f} GB/s (read + write)\n")
    del big

    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(n, 2, h, w, device="cuda", generator=g) * 2
    duals = (torch.rand(n, 4, h, w, device="cuda", generator=g) - 0.5) * 0.6
    consts = torch.randn(n, 3, h, w, device="cuda", generator=g) * torch.tensor([8.0, 8.0, 30.0], device="cuda").view(1, 3, 1, 1)
    p = TVL1Params(epsilon=0.0)
    reference_u, reference_p = _torch_iterations(u, duals, consts, p, 12)
    torch_ms = _time(lambda: _torch_iterations(u, duals, consts, p, 12), 3) / 12
    pixels = n * h * w
    print("| kernel | iterations / launch | tile (BH, BW, warps) | max |Δu| | max |Δp| | µs / iteration | GB/s (60 B/px) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print(f"| plain PyTorch | 1 | – | 0 | 0 | {torch_ms * 1e3:.0f} | {60 * pixels / torch_ms / 1e6:.0f} |")
    results = []
    for kernel, steps, tile in VARIANTS:
        try:
            out_u, out_p = _fused_iterations(u, duals, consts, p, 12, kernel, steps, tile)
            du = (out_u - reference_u).abs().max().item()
            dp = (out_p - reference_p).abs().max().item()
            ms = _time(lambda: _fused_iterations(u, duals, consts, p, 48, kernel, steps, tile), 3) / 48
        except Exception as error:  # a tile that does not compile or fit: report and go on
            print(f"| {kernel} | {steps} | {tile} | failed: {type(error).__name__}: {str(error)[:120]} |||||")
            continue
        results.append((ms, kernel, steps, tile))
        print(f"| {kernel} | {steps} | {tile} | {du:.1e} | {dp:.1e} | {ms * 1e3:.0f} | {60 * pixels / ms / 1e6:.0f} |")

    planes = u.reshape(-1, h, w)
    eager_ms = _time(lambda: median_filter(planes, 5), 3)
    kernel_ms = _time(lambda: median_filter_triton(u, 5), 5)
    same = torch.equal(median_filter_triton(u, 5).reshape(-1, h, w), median_filter(planes, 5))
    print(f"\n5x5 median of {planes.shape[0]} planes: eager network {eager_ms:.1f} ms, Triton kernel "
          f"{kernel_ms:.2f} ms ({8 * planes.numel() / kernel_ms / 1e6:.0f} GB/s read + write; identical: {same})")

    if results:
        best = min(results)
        print(f"\nfastest: {best[1]} × {best[2]} iterations per launch, tile {best[3]}: {best[0] * 1e3:.0f} µs / iteration")
        fused.KERNEL, fused.STEPS_PER_LAUNCH = best[1], best[2]
        fused.TILES[best[2]] = best[3]
    frames = torch.nn.functional.avg_pool2d(torch.rand(n + 1, 1, h, w, device="cuda", generator=g) * 255, 5, 1, 2)[:, 0]
    for batch in (32, n):
        a, b = frames[:batch], frames[1 : batch + 1]
        ms = _time(lambda: tvl1(a, b, backend="triton", **TVL1_FAST), 2)
        print(f"tvl1 {TVL1_FAST} batch {batch}: {batch / ms * 1e3:.0f} pairs/s")
    a, b = frames[:n], frames[1 : n + 1]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        tvl1(a, b, backend="triton", **TVL1_FAST)
        torch.cuda.synchronize()
    print(f"\nwhere the time goes (tvl1 fast, batch {n}):")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


def _torch_iterations(u, duals, consts, p, count):
    inv_grad = 1.0 / (consts[:, 0] ** 2 + consts[:, 1] ** 2).clamp_min(1.1920928955078125e-07)
    for _ in range(count):
        u, duals = primal_dual_step(u, duals, consts[:, 0], consts[:, 1], consts[:, 2], inv_grad, p)
    return u, duals


def _fused_iterations(u, duals, consts, p, count, kernel, steps, tile):
    a_u, a_p = u.clone(), duals.clone()
    b_u, b_p = torch.empty_like(u), torch.empty_like(duals)
    done = 0
    while done < count:
        k = min(steps, count - done)
        if kernel == "loads":
            fused.run_one_iteration_loads(a_u, a_p, consts, b_u, b_p, p, *tile)
        else:
            fused.run_iterations(a_u, a_p, consts, b_u, b_p, p, k, tile=tile if k == steps else None)
        a_u, b_u, a_p, b_p = b_u, a_u, b_p, a_p
        done += k
    return a_u, a_p


def _time(fn, repeats: int) -> float:
    """Median milliseconds of fn() after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


if __name__ == "__main__":
    main()
