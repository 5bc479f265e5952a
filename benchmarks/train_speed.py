"""Training speed of one stream: packed data → loss.backward, beside the same model fed synthetic tensors.

    python benchmarks/train_speed.py                 # on a CUDA machine
    python benchmarks/train_speed.py --streams flow --batch-sizes 16 64 --seconds 10
    python benchmarks/train_speed.py --steps graph eager --batch-sizes 16 --inputs cpu lz4
    python benchmarks/train_speed.py --streams flow --inputs cpu lz4 zstd-near lz4-near

For each stream (EfficientNet-B0 MAT-EffNet, T=8 segments, 224×224, flow L=10) and training step (the
one `mateffnet train` runs: bf16 autocast, channels_last, SGD with clipping and a cosine schedule; its
forward and backward replayed as a CUDA graph, or eager): clips/s and peak GPU memory with uint8
batches already on the GPU, for batch 16 and doubling sizes up to the largest that fits; then the
end-to-end rate with batches from the packed store (`VideoDataset` + `make_loader`: JPEGs decoded by
CPU workers into the pinned ring buffer, or by nvJPEG on the GPU; for flow also stores with the other
flow codecs, e.g. LZ4 and the default zstd-near, decoded by CPU workers) at batch 16 and at the largest batch that leaves 15 % of the GPU memory
free (room for the loader's batches in flight), and its ratio to the synthetic rate (target ≥ 0.9: the
GPU does not wait for data). A "graph → eager" row is a graph step that fell back to eager.
The stores are built as benchmarks/loader.py builds them (the real clips of ../shared/data, prepared
with TV-L1 flow at short side 256).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import _machine, build_store, forever, store_dir  # noqa: E402

from mateffnet.config import TrainConfig  # noqa: E402
from mateffnet.data.dataset import VideoDataset  # noqa: E402
from mateffnet.data.loader import default_workers, make_loader  # noqa: E402
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC, FLOW_CODECS  # noqa: E402
from mateffnet.runtime import cpu_cores  # noqa: E402
from mateffnet.engine.step import GraphedTrainStep, StepOptions, TrainStep, make_train_step  # noqa: E402
from mateffnet.engine.build import make_optimizer  # noqa: E402
from mateffnet.models import StreamNet  # noqa: E402


def make_step(modality: str, args, graphed: bool) -> TrainStep:
    """The training step a run builds: SGD with momentum and weight decay, clipping, cosine schedule, bf16."""
    torch.manual_seed(0)
    model = StreamNet(101, modality=modality, num_segments=args.segments, flow_length=args.flow_length).cuda()
    model.use_channels_last().train()
    tc = TrainConfig()
    optimizer, scheduler = make_optimizer(model, tc, steps_per_epoch=1000)
    options = StepOptions(torch.bfloat16, tc.label_smoothing, tc.clip_grad_norm)
    return make_train_step(model, optimizer, scheduler, options=options, graphed=graphed)


def measure(batches, step: TrainStep, seconds: float, warmup: int = 5) -> float:
    """clips/s over `seconds` of training steps on `batches` (an iterator of (clips, labels) on the GPU)."""
    for _ in range(warmup):
        step(*next(batches))
    torch.cuda.synchronize()
    clips, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch, labels = next(batches)
        step(batch, labels)
        clips += batch.shape[0]
    torch.cuda.synchronize()
    return clips / (time.perf_counter() - started)


def step_used(step: TrainStep) -> str:
    """ "graph", or "eager" (asked for, or the graph's fallback when its warm-up did not fit)."""
    return "graph" if isinstance(step, GraphedTrainStep) and not step.eager_only else "eager"


def synthetic(modality: str, batch: int, graphed: bool, args):
    """(clips/s, peak GiB, step used) with the same uint8 batch on the GPU every step; None when it does not fit."""
    step = make_step(modality, args, graphed)
    channels = 3 if modality == "rgb" else 2 * args.flow_length
    clips = torch.randint(0, 256, (batch, args.segments, channels, 224, 224), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 101, (batch,), device="cuda")

    def same():
        while True:
            yield clips, labels

    torch.cuda.reset_peak_memory_stats()
    try:
        rate = measure(same(), step, args.seconds)
        used = step_used(step)
    except torch.OutOfMemoryError:
        return None
    finally:
        del step, clips
        gc.collect()  # a step's CUDA graph pool is freed with the step
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    return rate, peak, used


def end_to_end(modality: str, batch: int, graphed: bool, items, store: Path, gpu_decode: bool, workers: int,
               args) -> tuple[float, str]:
    repeat = max(1, -(-200 * batch // len(items)))  # epochs of at least 200 batches, as on a real dataset
    dataset = VideoDataset(items * repeat, store, modality, num_segments=args.segments, flow_length=args.flow_length,
                           train=True, input_size=224, defer_decode=gpu_decode)
    loader = make_loader(dataset, batch, device="cuda", workers=workers, drop_last=True)
    step = make_step(modality, args, graphed)
    iterator = forever(loader)
    try:
        return measure(iterator, step, args.seconds, warmup=3 + workers // 4), step_used(step)
    finally:
        del iterator, loader, step
        gc.collect()
        torch.cuda.empty_cache()


def row(modality: str, asked: str, used: str) -> str:
    return f"| {modality} | {asked if used == asked else f'{asked} → {used}'} |"


def end_to_end_batches(fits: dict[int, tuple[float, float, str]]) -> list[int]:
    """Batch 16 (the smallest) and the largest whose synthetic peak leaves 15 % of the GPU's memory free:
    the loader's batches in flight need room beside the model's activations."""
    if not fits:
        return []
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    roomy = [batch for batch, (_, peak, _) in fits.items() if peak <= 0.85 * total]
    return sorted({min(fits), max(roomy or [min(fits)])})


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
    parser.add_argument("--steps", nargs="+", default=["graph"], choices=["graph", "eager"],
                        help="training step: CUDA graph (what a run uses on one GPU) and/or eager")
    parser.add_argument("--inputs", nargs="+", default=["cpu", "nvjpeg", "lz4", DEFAULT_FLOW_CODEC],
                        choices=["cpu", "nvjpeg", *(c for c in FLOW_CODECS if c != "jpeg")],
                        help="end-to-end inputs: JPEG store decoded by CPU workers / by nvJPEG; flow stores of the other "
                        "flow codecs (CPU workers)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    workers = args.workers if args.workers is not None else default_workers()
    work = args.store or Path(tempfile.mkdtemp(prefix="mateffnet-train-bench-"))
    print(f"machine: {_machine()}; {cpu_cores()} CPU cores; torch {torch.__version__}; {torch.cuda.get_device_name()}")
    items, _, flow_method = build_store(work, 256, None, torch.device("cuda"))
    codecs = [name for name in args.inputs if name in FLOW_CODECS] if "flow" in args.streams else []
    for codec in codecs:
        build_store(work, 256, flow_method, torch.device("cuda"), flow_codec=codec)
    print(f"store: {len(items)} videos ({flow_method} flow) in {work}")
    print(f"EfficientNet-B0 MAT-EffNet, T={args.segments}, L={args.flow_length}, 224x224, bf16 autocast, channels_last, "
          "SGD + clipping + cosine schedule (the training step of `mateffnet train`)\n")
    print("| stream | step | batch | input | clips/s | frames/s | peak GPU memory (GiB) | end-to-end / synthetic |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for modality in args.streams:
        inputs = {"cpu": (work / "store", False, f"packed store, CPU decode ({workers} workers)", workers),
                  "nvjpeg": (work / "store", True, f"packed store, nvJPEG decode ({args.gpu_workers} workers)",
                             args.gpu_workers)}
        if modality == "flow":
            for codec in codecs:
                inputs[codec] = (store_dir(work, codec), False, f"packed store, flow as {codec}, CPU decode ({workers} workers)",
                                 workers)
        for step_kind in args.steps:
            graphed = step_kind == "graph"
            fits = {}
            for batch in args.batch_sizes:
                result = synthetic(modality, batch, graphed, args)
                start = f"{row(modality, step_kind, result[2] if result else step_kind)} {batch} | synthetic (GPU tensors) |"
                if result is None:
                    print(f"{start} out of memory | | | |", flush=True)
                    break
                fits[batch] = result
                print(f"{start} {result[0]:.1f} | {result[0] * args.segments:.0f} | {result[1]:.1f} | |", flush=True)
            for batch in end_to_end_batches(fits):
                for name in args.inputs:
                    if name not in inputs:
                        continue
                    store, gpu_decode, label, count = inputs[name]
                    try:
                        rate, used = end_to_end(modality, batch, graphed, items, store, gpu_decode, count, args)
                    except torch.OutOfMemoryError:
                        print(f"{row(modality, step_kind, step_kind)} {batch} | {label} | out of memory | | | |", flush=True)
                        continue
                    print(f"{row(modality, step_kind, used)} {batch} | {label} | {rate:.1f} | "
                          f"{rate * args.segments:.0f} | | {rate / fits[batch][0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
