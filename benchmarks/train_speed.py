"""Training speed of one stream: the default step beside the eager and graph-only steps and plain timm.

    python benchmarks/train_speed.py                              # on a CUDA machine
    python benchmarks/train_speed.py --streams flow --batch-sizes 16 64 --seconds 10
    python benchmarks/train_speed.py --steps default eager --batch-sizes 16 --inputs cpu lz4
    python benchmarks/train_speed.py --streams flow --inputs cpu lz4 lz4-near zstd-near lz4-near+nvcomp
    python benchmarks/train_speed.py --batch-sizes 16 128 --steps default --inputs default --warm-cache 4

For each stream (EfficientNet-B0 MAT-EffNet, T=8 segments, 224×224, flow L=10) and batch size (clips),
with the same uint8 batch on the GPU every step (synthetic: no loader), the training step of
`mateffnet train` (bf16 autocast, channels_last, SGD with momentum, weight decay, clipping and a cosine
schedule) as
  default   what `mateffnet train` picks on one GPU (train.compile auto, train.cuda_graph null):
            torch.compile + the forward/backward replayed as one CUDA graph
  tuned     the default with train.compile_tuning: true (inductor times its kernels' block sizes and
            runs 1x1 convolutions as matmuls; a longer cold compile)
  no-triton the default with cuDNN's input gradient in the strided depthwise layers instead of
            models/depthwise_triton.py's kernel (what the kernel buys)
  library-dgrad  the default with cuDNN's own depthwise gradients everywhere (what models/depthwise.py buys)
  eager     no compile, no graph (train.compile=false train.cuda_graph=false)
  graph     the eager forward/backward replayed as a CUDA graph (the default before torch.compile)
  ddp       DistributedDataParallel (one process, NCCL), compiled, no graph (train.cuda_graph false;
            batch 32 only)
  ddp-graph the step of each `torchrun` process (train.cuda_graph null): DDP built on the capture stream,
            compiled and captured (batch 32 only)
beside two peer rows: plain timm `efficientnet_b0`, per-frame training at the same number of frames
per step (batch × T frames, 3 or 2L channels, float input normalised on the GPU, channels_last, bf16
autocast, SGD with momentum and weight decay, cross-entropy), eager and under `torch.compile`.
Columns: clips/s, frames/s (= clips/s × T), peak GPU memory, the first step's wall time (compiling,
capturing, autotuning: with a warm inductor cache, TORCHINDUCTOR_CACHE_DIR, a second run compiles
faster) and the ratio to the better peer row at the same batch. A row whose step fell back says which
step ran, e.g. "default (compiled)" (its note is on stderr). --repeats N measures each row N times after its
warm-up steps: clips/s is then the median, with the range of the N in brackets, and the ratios are of medians.

Each compiled row at a new batch shape compiles for ~1–2 minutes with a cold inductor cache (BENCHMARKS.md),
so the full table takes longer than a 10-minute job: run it in parts (--streams, --batch-sizes, --steps)
that share one TORCHINDUCTOR_CACHE_DIR, or with --warm-cache N, which first compiles every compiled row
(ours, DDP and the peer) in N child processes at once, each its own row's first step, and prints their cold
first-step times (inflated by running side by side) before the table measures every row on the warm cache.
Measure on an otherwise idle machine: a compilation running beside the table (another benchmark's, or a
--warm-cache child of another run) takes CPU and GPU time from every row, and the end-to-end ratios mean nothing.
--compile-once compiles once per model for all batch sizes (dynamic batch dimension, ours and the peer
alike); it is much slower per step, so it does not stand for `mateffnet train`, which compiles its one
static batch shape.

`--inputs` adds end-to-end rows from the packed store (VideoDataset + make_loader; the real clips of
../shared/data prepared as benchmarks/loader.py does; needs PyAV) at every batch size, with their ratio to
the synthetic rate (target ≥ 0.9): each runs the synthetic default row's step, compiled and captured once.
`--inputs default` is the row a user gets: a store of prepare's defaults, loaded as `mateffnet train` loads it
(data.decode auto: flow decoded by nvCOMP where it is installed; the loader's default workers).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mateffnet.config import TrainConfig  # noqa: E402
from mateffnet.engine.step import StepOptions, TrainStep, make_train_step, use_compile, use_cuda_graph  # noqa: E402
from mateffnet.engine.build import make_optimizer  # noqa: E402
from mateffnet.engine.distributed import data_parallel  # noqa: E402
from mateffnet.errors import error_line  # noqa: E402
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC, FLOW_CODECS  # noqa: E402
from mateffnet.models import StreamNet  # noqa: E402
from mateffnet.models.depthwise import DepthwiseConv2d  # noqa: E402

STEP_KINDS = ("default", "tuned", "no-triton", "library-dgrad", "eager", "graph", "ddp", "ddp-graph")
DDP_KINDS = ("ddp", "ddp-graph")
PEERS = ("timm eager", "timm compiled")
DDP_BATCH = 32


def make_step(modality: str, args, kind: str) -> TrainStep:
    """The training step a run builds: SGD with momentum and weight decay, clipping, cosine schedule, bf16."""
    torch.manual_seed(0)
    model = StreamNet(101, modality=modality, num_segments=args.segments, flow_length=args.flow_length).cuda()
    model.use_channels_last().train()
    for module in model.modules():
        if type(module) is DepthwiseConv2d and kind == "library-dgrad":
            module.__class__ = torch.nn.Conv2d  # same attributes and weight: the library's own backward
        elif type(module) is DepthwiseConv2d and kind == "no-triton":
            module.triton = False
    tc = TrainConfig(compile_tuning=kind == "tuned")
    optimizer, scheduler = make_optimizer(model, tc, steps_per_epoch=1000)
    options = StepOptions(torch.bfloat16, tc.label_smoothing, tc.clip_grad_norm)
    cuda = torch.device("cuda")
    graphed = {"eager": False, "graph": True, "ddp": False}.get(kind, use_cuda_graph(tc.cuda_graph, cuda, torch.bfloat16))
    compiled = kind in ("default", "tuned", "no-triton", "library-dgrad", *DDP_KINDS) and use_compile(tc.compile, cuda, tc.deterministic)
    net = model
    if kind in DDP_KINDS:
        net = data_parallel(model, torch.device("cuda", 0))  # as distributed.wrap_model builds it
    step = make_train_step(net, optimizer, scheduler, options=options, graphed=graphed, compiled=compiled,
                           tuned=tc.compile_tuning)
    if compiled and args.compile_once:
        step.forward = batch_dynamic(step.forward)
    return step


def batch_dynamic(compiled):
    """`compiled` called with its input's first dimension (the batch) marked dynamic: one compilation serves every
    batch size of a run (--compile-once), for our step and the peer alike."""
    def forward(batch):
        torch._dynamo.maybe_mark_dynamic(batch, 0)
        return compiled(batch)

    return forward


def make_peer(channels: int, compiled: bool, compile_once: bool = False, options: dict | None = None):
    """Plain timm per-frame training, the loop a user writes: step(frames, labels) → loss (`options`: inductor's,
    for torch.compile)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", num_classes=101, in_chans=channels).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    forward = torch.compile(model, options=options) if compiled else model
    if compiled and compile_once:
        forward = batch_dynamic(forward)

    def step(frames, labels):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(forward(frames), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def measure(step, batches, seconds: float, warmup: int = 5, repeats: int = 1) -> tuple[list[float], float]:
    """(steps/s over `seconds`, once per repeat; wall seconds of the first step: compile, capture, autotuning)."""
    started = time.perf_counter()
    step(*next(batches))
    torch.cuda.synchronize()
    first = time.perf_counter() - started
    for _ in range(warmup):
        step(*next(batches))
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeats):
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            step(*next(batches))
            steps += 1
        torch.cuda.synchronize()
        rates.append(steps / (time.perf_counter() - started))
    return rates, first


def rate_cells(clips: list[float], segments: int) -> tuple[float, str]:
    """The median clips/s of the repeats, and the table's clips/s cell (the repeats' range after it where there are
    several) and frames/s cell."""
    median = statistics.median(clips)
    spread = "" if len(clips) == 1 else f" ({min(clips):.1f}–{max(clips):.1f})"
    return median, f"{median:.1f}{spread} | {median * segments:.0f}"


def repeat(*batch):
    while True:
        yield batch


def synthetic(what: str, modality: str, batch: int, args, then=None):
    """(clips/s, peak GiB, first-step seconds, step used, what `then` returned) on one uint8 batch kept on the GPU;
    None: out of memory. `then(step, clips/s)` runs on the measured step before it is freed (end-to-end rows)."""
    channels = 3 if modality == "rgb" else 2 * args.flow_length
    torch.cuda.reset_peak_memory_stats()
    step = None
    try:
        if what in PEERS:
            step = make_peer(channels, compiled=what == "timm compiled", compile_once=args.compile_once)
            frames = torch.randn(batch * args.segments, channels, 224, 224, device="cuda")
            inputs = (frames.contiguous(memory_format=torch.channels_last),
                      torch.randint(0, 101, (batch * args.segments,), device="cuda"))
            used = what
        else:
            step = make_step(modality, args, what)
            inputs = (torch.randint(0, 256, (batch, args.segments, channels, 224, 224), dtype=torch.uint8, device="cuda"),
                      torch.randint(0, 101, (batch,), device="cuda"))
        rates, first = measure(step, repeat(*inputs), args.seconds, args.warmup, args.repeats)
        clips = [rate * batch for rate in rates]
        if what not in PEERS:
            used = step.kind
        peak = torch.cuda.max_memory_allocated() / 2**30
        extra = then(step, statistics.median(clips)) if then is not None else None
        return clips, peak, first, used, extra
    except torch.OutOfMemoryError:
        return None
    except Exception as error:  # noqa: BLE001 - a peer row that breaks must not end the table
        return [0.0], 0.0, 0.0, f"failed: {type(error).__name__}: {error_line(error, default='')[:120]}", None
    finally:
        del step
        inputs = None
        torch._dynamo.reset()  # frees compiled graphs (the on-disk cache stays)
        gc.collect()  # a step's CUDA graph pool is freed with the step
        torch.cuda.empty_cache()


COMPILED_ROWS = ("default", "tuned", "no-triton", "library-dgrad", *DDP_KINDS, "timm compiled")


def rows_at(batch: int, steps: list[str]) -> list[str]:
    """The rows of `steps` measured at `batch`, in the table's order (peers first; the DDP row at DDP_BATCH only)."""
    return [what for what in PEERS + STEP_KINDS if what in steps and (what not in DDP_KINDS or batch == DDP_BATCH)]


def warm_cache(args) -> None:
    """Each compiled row's first step in its own child process, `args.warm_cache` at a time, sharing the on-disk
    inductor cache, so that the table's rows compile from it; prints each child's cold first-step time as it ends.
    Children still running when this process ends (an error, SIGTERM from `timeout`) are killed, with the last
    line of their output: left running they would share the GPU with the rows measured after them."""
    import signal
    import subprocess

    jobs = [(modality, batch, what) for modality in args.streams for batch in args.batch_sizes
            for what in rows_at(batch, args.steps) if what in COMPILED_ROWS]
    budget = 2 * max(args.batch_sizes) + 64  # clips of the children at once: two of the largest batch and a few small fit the GPU
    print(f"warming the inductor cache: {len(jobs)} compiled rows, {args.warm_cache} at a time", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` below runs under `timeout`
    started, running = time.perf_counter(), {}

    def reap(block: bool) -> None:
        for job, (process, log) in list(running.items()):
            if block:
                process.wait()
            if process.poll() is None:
                continue
            del running[job]
            log.seek(0)
            output = log.read()
            row = [line for line in output.splitlines() if line.startswith(f"| {job[0]} |")]
            cells = [cell.strip() for cell in row[-1].split("|")] if row else []
            first = f"{cells[8]} s" if len(cells) > 8 and cells[8] else f"no row (exit {process.returncode}: {_last_line(output)})"
            print(f"  cold first step, {job[0]} {job[2]} batch {job[1]}: {first} "
                  f"(at {time.perf_counter() - started:.0f} s)", flush=True)

    try:
        for number, (modality, batch, what) in enumerate(jobs):
            command = [sys.executable, __file__, "--streams", modality, "--batch-sizes", str(batch), "--steps", what,
                       "--seconds", "0", "--warmup", "0", "--segments", str(args.segments),
                       "--flow-length", str(args.flow_length)]
            while running and (len(running) >= args.warm_cache or sum(b for _, b, _ in running) + batch > budget):
                time.sleep(1)
                reap(block=False)
            log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it until the child ends
            env = dict(os.environ, MASTER_PORT=str(29600 + number))
            running[modality, batch, what] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log
        reap(block=True)
    finally:
        for (modality, batch, what), (process, log) in running.items():
            process.kill()
            log.seek(0)
            print(f"  killed unfinished: {modality} {what} batch {batch} after {time.perf_counter() - started:.0f} s; "
                  f"last output: {_last_line(log.read())}", flush=True)
    print(f"cache warm after {time.perf_counter() - started:.0f} s\n", flush=True)


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1][:160] if lines else "(none)"


EXPECTED = {"default": "compiled + CUDA graph", "tuned": "compiled + CUDA graph", "no-triton": "compiled + CUDA graph",
            "library-dgrad": "compiled + CUDA graph", "eager": "eager", "graph": "CUDA graph",
            "ddp": "compiled", "ddp-graph": "compiled + CUDA graph"}


def label(what: str, used: str) -> str:
    if what in PEERS:
        return what if not used.startswith("failed") else f"{what} ({used})"
    name = {"tuned": "default + train.compile_tuning", "no-triton": "default, cuDNN's strided depthwise dgrad",
            "library-dgrad": "default, cuDNN's depthwise gradients", "ddp": "DDP 1 process, compiled, no graph",
            "ddp-graph": "default, DDP 1 process"}.get(what, what)
    return name if used == EXPECTED[what] else f"{name} ({used})"


def end_to_end_inputs(modality: str, work: Path, args) -> tuple[list, dict] | None:
    """(the stores' items, name → (store, decode on the GPU, description, workers)) of the --inputs rows for
    `modality`, the stores prepared in `work` (once; a store already there is reused); None, with one line,
    where they cannot be. "default" is a new store with `mateffnet train`'s data.decode: auto and workers."""
    try:
        from loader import build_store, store_dir

        from mateffnet.data.loader import default_workers, deferred_workers

        items, _, flow_method = build_store(work, 256, None, torch.device("cuda"))
        named = {name.split("+")[0] for name in args.inputs}
        named |= {DEFAULT_FLOW_CODEC} if "default" in args.inputs else set()
        codecs = [codec for codec in FLOW_CODECS if codec in named] if modality == "flow" else []
        for codec in codecs:
            build_store(work, 256, flow_method, torch.device("cuda"), flow_codec=codec)
    except Exception as error:  # noqa: BLE001 - PyAV or the real clips missing on this machine
        print(f"end-to-end rows not run: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return None
    workers = args.workers if args.workers is not None else default_workers()

    def gpu_workers(codec: str) -> int:  # the loader's own rule unless --gpu-workers says otherwise
        stand_in = SimpleNamespace(modality=modality, flow_codec=codec)
        return args.gpu_workers if args.gpu_workers is not None else deferred_workers(stand_in)

    flow_jpeg = ", flow as jpeg" if modality == "flow" else ""
    inputs = {"cpu": (work / "store", False, f"packed store{flow_jpeg}, CPU decode ({workers} workers)", workers),
              "nvjpeg": (work / "store", True, f"packed store{flow_jpeg}, nvJPEG decode ({gpu_workers('jpeg')} workers)",
                         gpu_workers("jpeg"))}
    default_store = store_dir(work, DEFAULT_FLOW_CODEC) if modality == "flow" else work / "store"
    inputs["default"] = (default_store, "auto", None, None)  # the loader's own choice of decoding and workers
    for codec in codecs:
        inputs[codec] = (store_dir(work, codec), False, f"packed store, flow as {codec} ({workers} workers)", workers)
        inputs[f"{codec}+nvcomp"] = (store_dir(work, codec), True,
                                     f"packed store, flow as {codec}, nvCOMP decode ({gpu_workers(codec)} workers)",
                                     gpu_workers(codec))
    return items, {name: inputs[name] for name in args.inputs if name in inputs}


def end_to_end_rows(step, synthetic_rate: float, modality: str, batch: int, inputs: tuple[list, dict],
                    args) -> list[str]:
    """Rows of `step` (the synthetic default row's, already compiled and captured for this batch shape) fed by
    the loader from each store of `inputs`, with their ratio to `synthetic_rate`."""
    from loader import forever

    from mateffnet.data.dataset import VideoDataset
    from mateffnet.data.loader import make_loader

    rows, (items, stores) = [], inputs
    for store, gpu_decode, text, count in stores.values():
        repeat_items = max(1, -(-200 * batch // len(items)))
        dataset = VideoDataset(items * repeat_items, store, modality, num_segments=args.segments,
                               flow_length=args.flow_length, train=True, input_size=224, defer_decode=gpu_decode)
        loader = make_loader(dataset, batch, device="cuda", workers=count, drop_last=True)
        text = text or f"packed store, what `mateffnet train` picks: {loader.describe()}"
        iterator = forever(loader)
        try:
            rates, _ = measure(step, iterator, args.seconds, 3 + loader.loader.num_workers // 4, args.repeats)
            rate, cells = rate_cells([rate * batch for rate in rates], args.segments)
            rows.append(f"| {modality} | {label('default', step.kind)} | {batch} | {text} | {cells} | | | "
                        f"{rate / synthetic_rate:.2f} of synthetic |")
        except torch.OutOfMemoryError:
            rows.append(f"| {modality} | default | {batch} | {text} | out of memory | | | | |")
        except Exception as error:  # noqa: BLE001 - a store that fails must not cost the synthetic row
            rows.append(f"| {modality} | default | {batch} | {text} | failed: {type(error).__name__}: "
                        f"{error_line(error, default='')[:120]} | | | | |")
        finally:
            del iterator, loader
            gc.collect()
        print(f"measured: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", default=["rgb", "flow"], choices=["rgb", "flow"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256],
                        help="clips per step; a size that does not fit ends the list")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each row this many times; the median is the row's figure, the range follows it")
    parser.add_argument("--warmup", type=int, default=5, help="steps after the first one before measuring")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--steps", nargs="+", default=list(STEP_KINDS) + list(PEERS), choices=list(STEP_KINDS) + list(PEERS))
    parser.add_argument("--compile-once", action="store_true",
                        help="compile each model once for all batch sizes (batch dimension dynamic, ours and the peer "
                             "alike) instead of once per batch size as `mateffnet train` does for its one batch shape")
    fast_codecs = [c for c in FLOW_CODECS if c != "jpeg"]
    parser.add_argument("--inputs", nargs="*", default=[],
                        choices=["default", "cpu", "nvjpeg", *fast_codecs, *(f"{c}+nvcomp" for c in fast_codecs)],
                        help="end-to-end rows: a store of the defaults loaded as `mateffnet train` does (default); "
                             "JPEG store decoded by CPU workers / by nvJPEG; flow stores of the other codecs decoded by "
                             "CPU workers (CODEC) or by nvCOMP on the GPU (CODEC+nvcomp)")
    parser.add_argument("--workers", type=int, default=None, help="CPU-decode loader workers (default: make_loader's)")
    parser.add_argument("--gpu-workers", type=int, default=None,
                        help="loader workers when nvJPEG or nvCOMP decodes (default: the loader's deferred_workers())")
    parser.add_argument("--store", type=Path, default=None, help="keep/reuse the store here")
    parser.add_argument("--warm-cache", type=int, default=0, metavar="N",
                        help="compile the compiled rows first, N child processes at a time (module docstring)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    torch.backends.cudnn.benchmark = True  # as `mateffnet train` (and timm's train.py) set it
    if args.warm_cache:
        warm_cache(args)
    if set(DDP_KINDS) & set(args.steps):
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        torch.cuda.set_device(0)
        torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    print(f"machine: {torch.cuda.get_device_name()}; {os.cpu_count()} CPU cores; torch {torch.__version__}; "
          f"inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')}; "
          f"{'one compilation per model (dynamic batch)' if args.compile_once else 'one compilation per batch size'}")
    print(f"EfficientNet-B0 MAT-EffNet, T={args.segments}, L={args.flow_length}, 224x224, bf16 autocast, channels_last, "
          "SGD + clipping + cosine schedule; synthetic uint8 batches on the GPU\n")
    print("| stream | step | batch (clips) | input | clips/s | frames/s | peak GPU memory (GiB) | first step (s) | ÷ best peer |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    if args.inputs and "default" not in args.steps:
        print("end-to-end rows not run: they reuse the default row's step (--steps default)")
    work = (args.store or Path(tempfile.mkdtemp(prefix="mateffnet-train-bench-"))) if args.inputs else None
    for modality in args.streams:
        inputs = end_to_end_inputs(modality, work, args) if work is not None and "default" in args.steps else None
        for batch in args.batch_sizes:
            peers, rows, fitted, fed = [], [], False, []
            for what in rows_at(batch, args.steps):
                then = None
                if inputs and what == "default":
                    then = functools.partial(end_to_end_rows, modality=modality, batch=batch, inputs=inputs, args=args)
                result = synthetic(what, modality, batch, args, then)
                if result is None:
                    rows.append((f"| {modality} | {what} | {batch} | synthetic | out of memory | | | |", None))
                    continue
                fitted = True
                clips, peak, first, used, extra = result
                rate, cells = rate_cells(clips, args.segments)
                if what in PEERS:
                    peers.append(rate)
                fed += extra or []
                rows.append((f"| {modality} | {label(what, used)} | {batch} | synthetic | {cells} | {peak:.1f} | "
                             f"{first:.1f} |", rate))
                print(f"measured: {rows[-1][0]}", file=sys.stderr, flush=True)  # progress, in case the run is cut
            best = max(peers, default=0.0)
            for text, rate in rows:  # ratios once every peer row of this batch is in
                print(f"{text} {f'{rate / best:.2f}' if rate and best else ''} |", flush=True)
            for text in fed:
                print(text, flush=True)
            if not fitted:
                break
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
