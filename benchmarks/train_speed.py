"""Training speed of one stream: packed data → loss.backward, beside the same model fed synthetic tensors.

    python benchmarks/train_speed.py                 # on a CUDA machine
    python benchmarks/train_speed.py --streams flow --batch-sizes 16 64 --seconds 10

For each stream (EfficientNet-B0 MAT-EffNet, T=8 segments, 224×224, flow L=10; bf16 autocast,
channels_last, SGD): clips/s and peak GPU memory with uint8 batches already on the GPU, for batch 16 and
doubling sizes up to the largest that fits; then the end-to-end rate with batches from the packed store
(`VideoDataset` + `make_loader`: JPEGs decoded by CPU workers into the pinned ring buffer, or by nvJPEG
on the GPU; for flow also the store with LZ4 flow, decoded by CPU workers) at batch 16 and at the
largest batch, and its ratio to the synthetic rate (target ≥ 0.9: the GPU does not wait for data).
The stores are built as benchmarks/loader.py builds them (the real clips of ../shared/data, prepared
with TV-L1 flow at short side 256).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import _cores, _machine, build_store, forever, store_dir  # noqa: E402

from mateffnet.data.dataset import VideoDataset  # noqa: E402
from mateffnet.data.loader import default_workers, make_loader  # noqa: E402
from mateffnet.models import StreamNet  # noqa: E402


def make_model(modality: str, args) -> tuple[StreamNet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = StreamNet(101, modality=modality, num_segments=args.segments, flow_length=args.flow_length).cuda()
    model.use_channels_last().train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def train_step(model, optimizer, clips, labels):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(batches, model, optimizer, seconds: float, warmup: int = 5) -> float:
    """clips/s over `seconds` of training steps on `batches` (an iterator of (clips, labels) on the GPU)."""
    for _ in range(warmup):
        train_step(model, optimizer, *next(batches))
    torch.cuda.synchronize()
    clips, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch, labels = next(batches)
        train_step(model, optimizer, batch, labels)
        clips += batch.shape[0]
    torch.cuda.synchronize()
    return clips / (time.perf_counter() - started)


def synthetic(modality: str, batch: int, args):
    """(clips/s, peak GiB) with the same uint8 batch on the GPU every step; None when it does not fit."""
    model, optimizer = make_model(modality, args)
    channels = 3 if modality == "rgb" else 2 * args.flow_length
    clips = torch.randint(0, 256, (batch, args.segments, channels, 224, 224), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 101, (batch,), device="cuda")

    def same():
        while True:
            yield clips, labels

    torch.cuda.reset_peak_memory_stats()
    try:
        rate = measure(same(), model, optimizer, args.seconds)
    except torch.OutOfMemoryError:
        return None
    finally:
        del model, optimizer, clips
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    return rate, peak


def end_to_end(modality: str, batch: int, items, store: Path, gpu_decode: bool, workers: int, args) -> float:
    repeat = max(1, -(-200 * batch // len(items)))  # epochs of at least 200 batches, as on a real dataset
    dataset = VideoDataset(items * repeat, store, modality, num_segments=args.segments, flow_length=args.flow_length,
                           train=True, input_size=224, defer_decode=gpu_decode)
    loader = make_loader(dataset, batch, device="cuda", workers=workers, drop_last=True)
    model, optimizer = make_model(modality, args)
    iterator = forever(loader)
    try:
        return measure(iterator, model, optimizer, args.seconds, warmup=3 + workers // 4)
    finally:
        del iterator, loader, model, optimizer
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", default=["rgb", "flow"], choices=["rgb", "flow"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per row")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="CPU-decode loader workers (default: make_loader's)")
    parser.add_argument("--gpu-workers", type=int, default=4, help="loader workers when nvJPEG decodes")
    parser.add_argument("--store", type=Path, default=None, help="keep/reuse the store here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    workers = args.workers if args.workers is not None else default_workers()
    work = args.store or Path(tempfile.mkdtemp(prefix="mateffnet-train-bench-"))
    print(f"machine: {_machine()}; {_cores()} CPU cores; torch {torch.__version__}; {torch.cuda.get_device_name()}")
    items, _, flow_method = build_store(work, 256, None, torch.device("cuda"))
    if "flow" in args.streams:
        build_store(work, 256, flow_method, torch.device("cuda"), flow_codec="lz4")
    print(f"store: {len(items)} videos ({flow_method} flow) in {work}")
    print(f"EfficientNet-B0 MAT-EffNet, T={args.segments}, L={args.flow_length}, 224x224, bf16 autocast, channels_last, SGD\n")
    print("| stream | batch | input | clips/s | frames/s | peak GPU memory (GiB) | end-to-end / synthetic |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for modality in args.streams:
        fits = {}
        for batch in args.batch_sizes:
            result = synthetic(modality, batch, args)
            if result is None:
                print(f"| {modality} | {batch} | synthetic (GPU tensors) | out of memory | | | |", flush=True)
                break
            fits[batch] = result
            print(f"| {modality} | {batch} | synthetic (GPU tensors) | {result[0]:.1f} | {result[0] * args.segments:.0f} | "
                  f"{result[1]:.1f} | |", flush=True)
        inputs = [(work / "store", False, f"packed store, CPU decode ({workers} workers)", workers),
                  (work / "store", True, f"packed store, nvJPEG decode ({args.gpu_workers} workers)", args.gpu_workers)]
        if modality == "flow":
            inputs.append((store_dir(work, "lz4"), False, f"packed store, flow as LZ4, CPU decode ({workers} workers)",
                           workers))
        for batch in sorted({min(fits), max(fits)}):
            for store, gpu_decode, label, count in inputs:
                rate = end_to_end(modality, batch, items, store, gpu_decode, count, args)
                print(f"| {modality} | {batch} | {label} | {rate:.1f} | {rate * args.segments:.0f} | | "
                      f"{rate / fits[batch][0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
