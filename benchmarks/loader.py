"""Data loading: clips/s the loader delivers vs the clips/s the model trains at, and bytes on disk.

    python benchmarks/loader.py                      # everything this machine can run
    python benchmarks/loader.py --workers 15 --seconds 20 --crop multiscale

Builds its own stores: the real clips of ../shared/data/videos (synthetic videos when absent) are
prepared at short side 256 with optical flow (TV-L1 on a GPU when available, else Farneback; or
--flow-method), with flow as JPEG, as LZ4 and in the default codec (`prepare --flow-codec`);
without PyAV, generated frames are packed directly. The JPEGs are also written as an mmaction2-style
rawframes folder per video (one file per image) for the reference rows and the disk comparison.

Rows (T=8 segments, batch 16, flow stacks of L=10, 224×224 crops, training sampling):
- "packed, CPU decode": our VideoDataset + make_loader, workers decode (libjpeg-turbo) and crop, and
  on CUDA write the clips into make_loader's pinned ring buffer;
- "packed, flow as lz4 / lz4-near, CPU decode": the same from the stores of those flow codecs (flow rows only);
- "rawframes, CPU decode": the same pipeline reading one file per image (the peers' layout);
- "packed, GPU decode": workers ship JPEG bytes, the batch is decoded with nvJPEG and cropped on
  the GPU (CUDA only);
- "StreamNet training": forward+backward+SGD step of mateffnet.models.StreamNet (EfficientNet-B0,
  bf16 autocast, channels_last) on synthetic uint8 batches already on the GPU (CUDA only).
The ratio column is loader clips/s over training clips/s: >= 1 means the GPU never waits for data.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import mateffnet  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np
import torch

from mateffnet.io.annotations import VideoItem, folders
from mateffnet.data.dataset import VideoDataset
from mateffnet.data.loader import default_workers, make_loader
from mateffnet.io import nvcomp
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC
from mateffnet.io.store import PackedVideo, store_path
from mateffnet.prepare.job import PrepareOptions, prepare_videos
from mateffnet.runtime import cpu_cores

SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io's move to TorchCodec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="loader workers for the CPU path (default: make_loader's)")
    parser.add_argument("--gpu-workers", type=int, default=None, help="loader workers for the GPU path (default 4)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time per row")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--flow-length", type=int, default=10)
    parser.add_argument("--crop", default="random", choices=["random", "multiscale"])
    parser.add_argument("--size", type=int, default=256, help="short side of the prepared frames")
    parser.add_argument("--flow-method", default=None, help="default: tvl1 on CUDA if available, else farneback")
    parser.add_argument("--store", type=Path, default=None, help="keep the generated store here (default: a temp dir)")
    parser.add_argument("--skip", default="", help="comma-separated row kinds to skip: rawframes,gpu,train")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cores = cpu_cores()
    workers = args.workers if args.workers is not None else default_workers()
    gpu_workers = args.gpu_workers if args.gpu_workers is not None else min(4, cores)
    work = args.store or Path(tempfile.mkdtemp(prefix="mateffnet-loader-bench-"))
    print(f"machine: {_machine()}; {cores} CPU cores; torch {torch.__version__}")
    print(f"clips: T={args.segments}, batch {args.batch}, L={args.flow_length}, 224x224 {args.crop} crops + flip, "
          f"frames prepared at short side {args.size}")

    items, report, flow_method = build_store(work, args.size, args.flow_method, device)
    for codec in OTHER_FLOW_CODECS:
        build_store(work, args.size, flow_method, device, flow_codec=codec)
    if report is None:
        print(f"store: {len(items)} synthetic videos packed directly (no PyAV here; flow: {flow_method}) in {work}")
    else:
        print(f"store: {report.done} videos prepared, {report.skipped} already there, in {report.seconds:.1f} s "
              f"({report.flow_pairs / max(report.seconds, 1e-9):.0f} flow pairs/s, {flow_method}) in {work}")
    _write_rawframes(work / "store", work / "rawframes", items)
    print()
    _print_disk(work, items)
    print()
    _print_decode_rates(work, items, cuda)
    print()

    rows = []
    for modality in ("rgb", "flow"):
        train = None if (not cuda or "train" in skip) else _train_rate(modality, args)
        rows.append((modality, f"packed, CPU decode ({workers} workers)",
                     _loader_rate(items, work / "store", modality, False, device, workers, args)))
        for codec in OTHER_FLOW_CODECS if modality == "flow" else ():
            rows.append((modality, f"packed, flow as {codec}, CPU decode ({workers} workers)",
                         _loader_rate(items, store_dir(work, codec), modality, False, device, workers, args)))
        if "rawframes" not in skip:
            rows.append((modality, f"rawframes folders, CPU decode ({workers} workers)",
                         _loader_rate(items, work / "rawframes", modality, False, device, workers, args)))
        if cuda and "gpu" not in skip:
            rows.append((modality, f"packed, GPU decode nvJPEG ({gpu_workers} workers)",
                         _loader_rate(items, work / "store", modality, True, device, gpu_workers, args)))
            for codec in OTHER_FLOW_CODECS if modality == "flow" and nvcomp.available() else ():
                rows.append((modality, f"packed, flow as {codec}, GPU decode nvCOMP ({gpu_workers} workers)",
                             _loader_rate(items, store_dir(work, codec), modality, True, device, gpu_workers, args)))
        rows.append((modality, "StreamNet training, bf16, channels_last", train))
    _print_table(rows)
    if args.store is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}; {gpu}"


# Flow codecs measured beside JPEG (which the "store" folder holds, with the RGB frames).
OTHER_FLOW_CODECS = ("lz4", DEFAULT_FLOW_CODEC, "zstd-near")


def store_dir(work: Path, flow_codec: str = "jpeg") -> Path:
    return work / ("store" if flow_codec == "jpeg" else f"store_{flow_codec}")


def build_store(work: Path, size: int, flow_method: str | None, device: torch.device, flow_codec: str = "jpeg"):
    """Prepare the benchmark clips into `store_dir(work, flow_codec)` → (items, report or None, flow method)."""
    from mateffnet.flow import FLOW_METHODS

    if flow_method is None:
        flow_method = "tvl1" if device.type == "cuda" and "tvl1" in FLOW_METHODS else "farneback"
    try:
        import av  # noqa: F401
    except ImportError:  # no PyAV: pack generated frames directly (same JPEG sizes and layout)
        return _synthetic_store(store_dir(work, flow_codec), size, flow_method, device, flow_codec), None, flow_method
    source = SHARED_VIDEOS if SHARED_VIDEOS.is_dir() else _synthetic_videos(work / "videos")
    items = folders(source).items()
    options = PrepareOptions(size=size, flow_method=flow_method, device=device.type, flow_codec=flow_codec)
    report = prepare_videos(items, store_dir(work, flow_codec), options, progress=False)
    if report.failed:
        raise SystemExit(f"preparing the benchmark store failed: {report.failures}")
    return items, report, flow_method


def _synthetic_videos(folder: Path) -> Path:
    """Ten 6-second 320x240 H.264 videos of a moving texture (when the real clips are absent)."""
    import av

    from mateffnet.io.decode import open_container

    for v in range(10):
        path = folder / f"class{v % 3}" / f"video{v}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = _moving_texture(v, 150, 240, 320).permute(0, 2, 3, 1).numpy()
        with open_container(path, "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return folder


def _moving_texture(seed: int, frames: int, height: int, width: int) -> torch.Tensor:
    """uint8 (frames, 3, H, W): a smooth random texture panning and bobbing (camera-like motion)."""
    g = torch.Generator().manual_seed(seed)
    big = torch.rand(1, 3, 2 * height, 3 * width, generator=g) * 255
    big = torch.nn.functional.avg_pool2d(big, 9, 1, 4)[0]
    out = torch.empty(frames, 3, height, width, dtype=torch.uint8)
    for i in range(frames):
        y = int(height / 2 + height / 3 * math.sin(i / 20 + seed))
        x = int(1.5 * i) % (2 * width)
        out[i] = big[:, y : y + height, x : x + width].to(torch.uint8)
    return out


def _synthetic_store(store: Path, size: int, flow_method: str, device: torch.device, flow_codec: str) -> list[VideoItem]:
    from mateffnet.io.flowcodec import encode_flow_planes
    from mateffnet.io.jpeg import encode_jpegs
    from mateffnet.io.store import PackedVideoWriter
    from mateffnet.flow import compute_flow, quantize_flow

    height, width = size, round(size * 4 / 3)
    items = []
    for v in range(10):
        item = VideoItem(f"class{v % 3}/video{v}", Path(f"video{v}.mp4"), v % 3)
        items.append(item)
        path = store_path(store, item.video_id)
        if path.exists():
            continue
        frames = _moving_texture(v, 150, height, width)
        flows = []
        for start in range(0, len(frames) - 1, 64):
            a, b = frames[start : start + 64], frames[start + 1 : start + 65]
            a = a[: len(b)]
            flows.append(quantize_flow(compute_flow(a.to(device), b.to(device), method=flow_method)).cpu())
        flow = torch.cat(flows)
        flow_blobs = encode_flow_planes(flow.reshape(-1, height, width), flow_codec, 95)
        with PackedVideoWriter(path) as writer:
            for i, blob in enumerate(encode_jpegs(frames, 90)):
                writer.add_rgb(i, blob)
            for k in range(len(flow)):
                writer.add_flow(k, flow_blobs[2 * k], flow_blobs[2 * k + 1])
            flow_meta = {"method": flow_method, "bound": 20.0, "codec": flow_codec}
            writer.finish({"width": width, "height": height, "fps": 25.0, "flow": flow_meta})
    return items


def _write_rawframes(store: Path, out: Path, items: list[VideoItem]) -> None:
    """The packed JPEGs as mmaction2 rawframes: img_%05d.jpg, flow_x_%05d.jpg, flow_y_%05d.jpg (1-based)."""
    for item in items:
        video = PackedVideo(store_path(store, item.video_id))
        folder = out / item.video_id
        folder.mkdir(parents=True, exist_ok=True)
        for i, blob in enumerate(video.rgb_jpegs(range(video.num_frames))):
            (folder / f"img_{i + 1:05d}.jpg").write_bytes(blob.numpy().tobytes())
        for k in range(video.num_flows):
            x, y = video.flow_blobs([k])
            (folder / f"flow_x_{k + 1:05d}.jpg").write_bytes(x.numpy().tobytes())
            (folder / f"flow_y_{k + 1:05d}.jpg").write_bytes(y.numpy().tobytes())


def _print_disk(work: Path, items: list[VideoItem]) -> None:
    packed = [store_path(work / "store", item.video_id) for item in items]
    folders_ = [work / "rawframes" / item.video_id for item in items]
    packed_apparent = sum(p.stat().st_size for p in packed)
    packed_allocated = sum(p.stat().st_blocks * 512 for p in packed)
    files = [f for folder in folders_ for f in folder.iterdir()]
    folder_apparent = sum(f.stat().st_size for f in files)
    folder_allocated = sum(f.stat().st_blocks * 512 for f in files) + sum(d.stat().st_blocks * 512 for d in folders_)
    n = len(items)
    frames = sum(PackedVideo(p).num_frames for p in packed)
    print(f"bytes on disk per video ({n} videos, {frames / n:.0f} frames each on average, RGB + flow JPEGs):")
    print(f"  {'layout':<38} {'files/video':>12} {'bytes/video':>14} {'allocated/video':>16}")
    print(f"  {'packed (.mfv, one file)':<38} {1:>12} {packed_apparent / n:>14,.0f} {packed_allocated / n:>16,.0f}")
    print(f"  {'rawframes folder (one JPEG per image)':<38} {len(files) / n:>12.0f} {folder_apparent / n:>14,.0f} "
          f"{folder_allocated / n:>16,.0f}")
    for codec in OTHER_FLOW_CODECS:
        others = [store_path(store_dir(work, codec), item.video_id) for item in items]
        apparent = sum(p.stat().st_size for p in others)
        allocated = sum(p.stat().st_blocks * 512 for p in others)
        print(f"  {f'packed, flow as {codec}':<38} {1:>12} {apparent / n:>14,.0f} {allocated / n:>16,.0f}")
    print(f"  packed / folder allocated: {packed_allocated / folder_allocated:.3f}; "
          f"index + footer overhead {(packed_apparent - folder_apparent) / n:,.0f} bytes/video")


def _print_decode_rates(work: Path, items: list[VideoItem], cuda: bool) -> None:
    """Raw decode rates (images/s): the ceiling of each loader path."""
    from mateffnet.io.flowcodec import decode_flow_planes
    from mateffnet.io.jpeg import decode_jpeg_list

    video = PackedVideo(store_path(work / "store", items[0].video_id))
    flow = video.flow_blobs(range(min(80, video.num_flows)))
    rgb = video.rgb_jpegs(range(min(64, video.num_frames)))
    print(f"decode rate, {video.width}x{video.height} images (images/s):")
    threads = torch.get_num_threads()
    for codec in OTHER_FLOW_CODECS:
        other = PackedVideo(store_path(store_dir(work, codec), items[0].video_id)).flow_blobs(range(min(80, video.num_flows)))
        torch.set_num_threads(1)
        decode_flow_planes(other[:4], codec, video.height, video.width)
        started = time.perf_counter()
        decode_flow_planes(other, codec, video.height, video.width)
        rate = len(other) / (time.perf_counter() - started)
        line = f"  {f'flow as {codec}':<17} CPU, 1 core:               {rate:9,.0f}"
        torch.set_num_threads(threads)
        if cuda and nvcomp.available():
            line += "   GPU nvCOMP, batches of " + ", ".join(
                f"{count}: {rate:9,.0f}" for count, rate in _nvcomp_rates(other, codec, video.height, video.width))
        print(line)
    for name, blobs, gray in (("flow (1-channel)", flow, True), ("RGB", rgb, False)):
        torch.set_num_threads(1)
        decode_jpeg_list(blobs[:4], gray)
        started = time.perf_counter()
        decode_jpeg_list(blobs, gray)
        cpu = len(blobs) / (time.perf_counter() - started)
        torch.set_num_threads(threads)
        line = f"  {name:<17} CPU libjpeg-turbo, 1 core: {cpu:9,.0f}"
        if cuda:
            batch = (blobs * (2560 // len(blobs) + 1))[:2560]  # one flow batch: 16 clips x 8 x 20
            decode_jpeg_list(batch, gray, "cuda")
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(3):
                decode_jpeg_list(batch, gray, "cuda")
            torch.cuda.synchronize()
            line += f"   GPU nvJPEG, batches of 2560: {3 * len(batch) / (time.perf_counter() - started):9,.0f}"
        print(line)


def _nvcomp_rates(blobs: list, codec: str, height: int, width: int) -> list[tuple[int, float]]:
    """Planes/s decoded by nvCOMP in batches of one flow batch of 16 and of 128 clips (x 8 x 20 planes)."""
    from mateffnet.io.flowcodec import decode_flow_batch, pack_blobs

    rates = []
    for count in (2560, 20480):
        data, lengths = pack_blobs((blobs * (count // len(blobs) + 1))[:count], codec)
        data = data.pin_memory()
        decode_flow_batch(data, lengths, codec, [(height, width)], "cuda")
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(3):
            decode_flow_batch(data, lengths, codec, [(height, width)], "cuda")
        torch.cuda.synchronize()
        rates.append((count, 3 * count / (time.perf_counter() - started)))
    return rates


def _loader_rate(items, root: Path, modality: str, defer: bool, device: torch.device, workers: int, args) -> float:
    # enough clips that one epoch outlasts the measurement
    repeat = max(1, math.ceil(400 * args.batch / len(items)))
    dataset = VideoDataset(items * repeat, root, modality, num_segments=args.segments, flow_length=args.flow_length,
                           train=True, input_size=224, train_crop=args.crop, defer_decode=defer)
    loader = make_loader(dataset, args.batch, device=device, workers=workers)
    iterator = forever(loader)
    for _ in range(3 + workers):  # worker start-up and first batches
        next(iterator)
    _sync(device)
    clips, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        batch, _ = next(iterator)
        clips += batch.shape[0]
    _sync(device)
    rate = clips / (time.perf_counter() - started)
    del iterator, loader
    return rate


def forever(loader):
    """Batches epoch after epoch (a fast loader can finish an epoch within the measuring time)."""
    while True:
        yield from loader


def _train_rate(modality: str, args) -> float | None:
    try:
        from mateffnet.models import StreamNet
    except ImportError:
        return None
    device = torch.device("cuda")
    model = StreamNet(101, modality=modality, num_segments=args.segments, flow_length=args.flow_length).to(device)
    model.use_channels_last()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    channels = 3 if modality == "rgb" else 2 * args.flow_length
    clips = torch.randint(0, 256, (args.batch, args.segments, channels, 224, 224), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 101, (args.batch,), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    _sync(device)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        step()
        steps += 1
    _sync(device)
    return steps * args.batch / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _print_table(rows) -> None:
    train = {modality: rate for modality, name, rate in rows if name.startswith("StreamNet")}
    print(f"{'stream':<6} {'path':<50} {'clips/s':>9} {'loader/train':>13}")
    for modality, name, rate in rows:
        shown = "n/a" if rate is None else f"{rate:9.1f}"
        reference = train.get(modality)
        ratio = "" if rate is None or not reference or name.startswith("StreamNet") else f"{rate / reference:12.2f}x"
        print(f"{modality:<6} {name:<50} {shown:>9} {ratio:>13}")
    if any(rate is None for _, _, rate in rows):
        print("n/a: the training rate needs CUDA and mateffnet.models.StreamNet")


if __name__ == "__main__":
    raise SystemExit(main())
