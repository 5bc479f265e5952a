"""Optical flow speed and accuracy: ours (TV-L1 in PyTorch/Triton) against OpenCV, RAFT and Farneback.

    python benchmarks/flow.py [--data ../shared/data] [--batch-sizes 1,4,16,64,128,256] [--quick] [--json FILE]

Speed: frame pairs per second at 340x256 on consecutive frames of a real clip (the Kinetics demo in the
shared data), GPU rows on the first CUDA device, CPU rows on all cores (OpenCV: one pair per worker
thread, each single-threaded; ours: one batch with torch using every core). Accuracy: average end-point
error on the synthetic suite (real frames warped by known flows, `tests.helpers.flows`), and the
mean absolute difference to the field's shipped TV-L1 flow (TSN x/y JPEGs) of one real pair.
Needs opencv-contrib-python(-headless) for the OpenCV rows. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mateffnet.flow import TVL1_FAST, quantize_flow
from mateffnet.flow.tvl1 import tvl1
from tests.helpers import flows as synthetic  # run from the repository root
from mateffnet.flow.tvl1_params import TVL1Params

OPENCV_DEFAULTS: dict = {}
DEMO = Path("videos/kinetics400/arm_wrestling/demo.mp4")
RAWFRAMES = Path("rawframes/v_ApplyEyeMakeup_g01_c01")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--batch-sizes", default="1,4,16,64,128,256")
    parser.add_argument("--cpu-pairs", type=int, default=0, help="pairs per CPU row (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="fewer rows and repetitions (a smoke test)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args()
    import cv2

    cores = os.cpu_count() or 1
    frames = _read_gray_frames(args.data / DEMO)
    suite = _suite(frames)
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if cuda else "no GPU"
    print(f"{datetime.date.today()} · {device_name} · {platform.processor() or platform.machine()} × {cores} cores · "
          f"torch {torch.__version__} · OpenCV {cv2.__version__} · {frames[0].shape[1]}x{frames[0].shape[0]} frames\n")
    rows = []
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        batch_sizes = [b for b in batch_sizes if b in (1, 64)] or batch_sizes[:2]
    cpu_pairs = args.cpu_pairs or cores
    real0 = torch.stack(frames[:-1])
    real1 = torch.stack(frames[1:])

    if cuda:
        gpu0, gpu1 = real0.cuda(), real1.cuda()
        fast_epe = _epe_ours(suite, "cuda", "triton", TVL1_FAST)
        for batch in batch_sizes:
            rate = _rate_gpu(lambda a, b: tvl1(a, b, backend="triton", **TVL1_FAST), gpu0, gpu1, batch, args.quick)
            rows.append(_row("ours TV-L1, fused Triton", "GPU", "fast: 30×1 iterations, ε=0", batch, rate, fast_epe))
        torch_epe = fast_epe if args.quick else _epe_ours(suite, "cuda", "torch", TVL1_FAST)
        rate = _rate_gpu(lambda a, b: tvl1(a, b, backend="torch", **TVL1_FAST), gpu0, gpu1, 64, args.quick)
        rows.append(_row("ours TV-L1, plain PyTorch", "GPU", "fast: 30×1 iterations, ε=0", 64, rate, torch_epe))
        if not args.quick:
            default_epe = _epe_ours(suite, "cuda", "triton", OPENCV_DEFAULTS)
            for batch in (16, 128):
                rate = _rate_gpu(lambda a, b: tvl1(a, b, backend="triton"), gpu0, gpu1, batch, True)
                rows.append(_row("ours TV-L1, fused Triton", "GPU", "OpenCV defaults (ε rule)", batch, rate, default_epe))
        raft_batches = [1, 64] if args.quick else [1, 16, 64]
        for batch in raft_batches:
            from mateffnet.flow.raft import raft

            rate = _rate_gpu(lambda a, b: raft(a, b, weights=None, batch_size=batch), gpu0, gpu1, batch, args.quick)
            rows.append(_row("RAFT-small (torchvision)", "GPU", "random weights, 12 updates", batch, rate, None))

    if hasattr(cv2, "optflow"):
        for params in (TVL1_FAST, OPENCV_DEFAULTS):
            label = "fast: 30×1 iterations, ε=0" if params else "OpenCV defaults (ε rule)"
            epe = _epe_opencv(suite, params, cores)
            n = cpu_pairs if params or not args.quick else min(cpu_pairs, 2)
            rate = _rate_opencv_pool(lambda a, b, p=params: _opencv_tvl1(a, b, p), frames, n, cores)
            rows.append(_row("OpenCV TV-L1 (contrib, CPU)", "CPU", label, 1, rate, epe))
    else:
        print("cv2.optflow missing (install opencv-contrib-python-headless): no OpenCV TV-L1 rows\n")
    from mateffnet.flow.farneback import farneback

    rate = _rate_opencv_pool(lambda a, b: farneback(a[None], b[None])[0], frames, cpu_pairs * 4, cores)
    rows.append(_row("OpenCV Farneback (CPU)", "CPU", "mateffnet defaults", 1, rate, _epe_farneback(suite)))
    for params in (TVL1_FAST, OPENCV_DEFAULTS):
        if args.quick and not params:
            continue
        label = "fast: 30×1 iterations, ε=0" if params else "OpenCV defaults (ε rule)"
        epe = _epe_ours(suite, "cpu", "torch", params)
        rate = _rate_ours_process_pool(params, frames, cpu_pairs, cores)
        rows.append(_row("ours TV-L1, plain PyTorch, 1 pair per process", "CPU", label, 1, rate, epe))
        torch.set_num_threads(cores)
        start = time.perf_counter()
        tvl1(real0[:cpu_pairs], real1[:cpu_pairs], backend="torch", **params)
        rate = cpu_pairs / (time.perf_counter() - start)
        rows.append(_row(f"ours TV-L1, plain PyTorch, one batch on {cores} threads", "CPU", label, cpu_pairs, rate, epe))

    print()
    _print_speed_table(rows, [name for name in synthetic.standard_cases(8, 8)])
    agreement = _shipped_agreement(args.data / RAWFRAMES)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "cores": cores, "rows": rows, "agreement": agreement}, indent=2))


def _row(method, device, params, batch, rate, epe):
    rate, memory = rate if isinstance(rate, tuple) else (rate, None)
    mean = "n/a" if epe is None else f"{epe['mean']:.3f} px"
    print(f"  {method} · {device} · {params} · batch {batch}: {rate:.1f} pairs/s, EPE {mean}", flush=True)
    return {"method": method, "device": device, "params": params, "batch": batch, "pairs_per_s": rate,
            "gpu_memory_gib": memory, "epe": epe}


# ----------------------------------------------------------------------------------------------


def _read_gray_frames(path: Path) -> list[torch.Tensor]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)))
    if len(frames) < 2:
        raise SystemExit(f"could not read frames from {path} (pass --data: the project's shared data folder)")
    return frames


def _suite(frames):
    h, w = frames[0].shape
    cases = []
    for index, (name, truth) in enumerate(synthetic.standard_cases(h, w).items()):
        frame0, frame1, valid = synthetic.make_pair(frames[10 * (index + 1)], truth)
        cases.append((name, frame0, frame1, truth, valid))
    return cases


def _epe(flows, suite):
    per_case = [synthetic.endpoint_error(flows[i], c[3], c[4]) for i, c in enumerate(suite)]
    return {"mean": statistics.fmean(per_case), "per_case": per_case}


def _epe_ours(suite, device, backend, params):
    frames0 = torch.stack([c[1] for c in suite]).to(device)
    frames1 = torch.stack([c[2] for c in suite]).to(device)
    return _epe(tvl1(frames0, frames1, backend=backend, **params).cpu(), suite)


def _opencv_tvl1(frame0: torch.Tensor, frame1: torch.Tensor, params: dict) -> torch.Tensor:
    import cv2

    p = TVL1Params(**params)
    solver = cv2.optflow.DualTVL1OpticalFlow_create(
        p.tau, p.lambda_, p.theta, p.nscales, p.warps, p.epsilon, p.inner_iterations, p.outer_iterations,
        p.scale_step, p.gamma, p.median_filtering,
    )
    return torch.from_numpy(solver.calc(frame0.numpy(), frame1.numpy(), None)).permute(2, 0, 1)


def _epe_opencv(suite, params, cores):
    import cv2

    cv2.setNumThreads(1)
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        flows = list(pool.map(lambda c: _opencv_tvl1(c[1], c[2], params), suite))
    return _epe(flows, suite)


def _epe_farneback(suite):
    from mateffnet.flow.farneback import farneback

    return _epe([farneback(c[1][None], c[2][None])[0] for c in suite], suite)


def _rate_gpu(fn, frames0, frames1, batch, quick) -> float:
    """Pairs/s of fn on `batch` consecutive real pairs already on the GPU (median of several runs)."""
    a, b = frames0[:batch], frames1[:batch]
    fn(a, b)  # warm-up: compilation, autotuning, allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    runs = 2 if quick else 5
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(a, b)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - frames0.numel() * frames0.element_size() * 2
    return a.shape[0] / statistics.median(times), peak / 2**30


def _rate_opencv_pool(fn, frames, pairs, cores) -> float:
    """Pairs/s of a single-threaded CPU flow run on `pairs` real pairs by one worker thread per core."""
    import cv2

    cv2.setNumThreads(1)
    jobs = [(frames[i % (len(frames) - 1)], frames[i % (len(frames) - 1) + 1]) for i in range(pairs)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda job: fn(*job), jobs))
    return pairs / (time.perf_counter() - start)


def _rate_ours_process_pool(params, frames, pairs, cores) -> float:
    """Pairs/s of our CPU flow with one single-threaded worker process per core, one pair per task
    (the way OpenCV runs here too, but processes: our per-operation Python steps would share one GIL)."""
    import multiprocessing

    jobs = [(frames[i % (len(frames) - 1)].numpy(), frames[i % (len(frames) - 1) + 1].numpy()) for i in range(pairs)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(cores, mp_context=context, initializer=_single_threaded) as pool:
        list(pool.map(_ours_cpu_pair, [jobs[0]] * cores, [params] * cores))  # start-up and warm-up
        start = time.perf_counter()
        list(pool.map(_ours_cpu_pair, jobs, [params] * pairs))
        return pairs / (time.perf_counter() - start)


def _single_threaded() -> None:
    torch.set_num_threads(1)


def _ours_cpu_pair(job, params) -> None:
    frame0, frame1 = job
    tvl1(torch.from_numpy(frame0)[None], torch.from_numpy(frame1)[None], backend="torch", **params)


def _print_speed_table(rows, case_names):
    reference = {r["params"]: r["pairs_per_s"] for r in rows if r["method"].startswith("OpenCV TV-L1")}
    print("| method | device | parameters | batch | pairs/s | × OpenCV TV-L1 (same parameters, all CPU cores) "
          f"| GPU memory (GiB) | EPE mean (px) | EPE {' / '.join(case_names)} |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["pairs_per_s"] / reference[r["params"]] if r["params"] in reference else None
        epe = r["epe"]
        ratio_text = "" if ratio is None else f"{ratio:.1f}×"
        mean_text = "n/a" if epe is None else f"{epe['mean']:.3f}"
        cases_text = "n/a" if epe is None else " / ".join(f"{e:.3f}" for e in epe["per_case"])
        memory_text = "" if r["gpu_memory_gib"] is None else f"{r['gpu_memory_gib']:.2f}"
        print(f"| {r['method']} | {r['device']} | {r['params']} | {r['batch']} | {r['pairs_per_s']:.1f} | "
              f"{ratio_text} | {memory_text} | {mean_text} | {cases_text} |")


def _shipped_agreement(folder: Path):
    """Mean |difference| (0–255) between quantised flows and the shipped x/y JPEGs of img_00001 → 00002."""
    import cv2

    if not (folder / "x_00001.jpg").exists():
        print(f"\n({folder} missing: no comparison with the shipped flow)")
        return None
    gray = [torch.from_numpy(cv2.cvtColor(cv2.imread(str(folder / f"img_0000{i}.jpg")), cv2.COLOR_BGR2GRAY))
            for i in (1, 2)]
    shipped = np.stack([cv2.imread(str(folder / f"{axis}_00001.jpg"), cv2.IMREAD_GRAYSCALE) for axis in "xy"])
    candidates = {"zero flow": torch.zeros(2, *gray[0].shape)}
    for label, params in (("OpenCV defaults", OPENCV_DEFAULTS), ("fast: 30×1, ε=0", TVL1_FAST)):
        candidates[f"ours TV-L1, {label}"] = tvl1(gray[0][None], gray[1][None], backend="torch", **params)[0]
        if hasattr(cv2, "optflow"):
            candidates[f"OpenCV TV-L1, {label}"] = _opencv_tvl1(gray[0], gray[1], params)
    print(f"\nAgreement with the field's flow ({folder.name}, img_00001 → img_00002 vs x_00001/y_00001.jpg, ±20 px):\n")
    print("| flow | mean abs. difference x | y | both (0–255 units) |")
    print("|---|---:|---:|---:|")
    result = {}
    for label, flow in candidates.items():
        q = quantize_flow(flow).numpy().astype(np.float64)
        diff = np.abs(q - shipped).mean(axis=(1, 2))
        result[label] = diff.tolist()
        print(f"| {label} | {diff[0]:.3f} | {diff[1]:.3f} | {diff.mean():.3f} |")
    return result


if __name__ == "__main__":
    main()
