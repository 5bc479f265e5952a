"""Flow codecs side by side on the same quantised flow planes: bytes, decoding and encoding cost on one core, error.

    python benchmarks/flow_codecs.py --stores STORE [STORE ...]      # stores with lossless flow (lz4 or zstd)
    python benchmarks/flow_codecs.py                                  # prepares the shared clips first (Farneback)

Every row encodes the same planes (the exact TSN-quantised flow read from lossless stores, a sample of fields
of every video) and decodes them as the loader does: a stack of 2L = 20 planes per call, only a 224×224 region,
every other stack mirrored (`decode_flow_planes(..., region, mirror, out=...)`; the reference rows do the same
with their library). Times are CPU time of this thread (`time.thread_time`, pinned to one core, one thread),
the median of `--repeats` passes with the fastest and slowest pass, the codecs taking turns in each pass: on a
shared machine CPU time is steadier than wall time. "error" is against the exact planes, in storage units (0-255) and in pixels (× 2·bound/255).
Rows of optional libraries (OpenCV, imagecodecs) appear where they are installed. The last block projects
the flow loader rate of the 16-core host from these per-core times (see `project`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import _machine  # noqa: E402

from mateffnet.io.flowcodec import decode_flow_planes, encode_flow_planes  # noqa: E402
from mateffnet.io.jpeg import as_tensor, region_columns  # noqa: E402
from mateffnet.io.store import PackedVideo  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STACK = 20  # planes per decode call: one flow stack of L = 10 fields
CROP = 224
# Measured on the lent H100 host (BENCHMARKS.md, "Data loading", H100 machine): one-core decode rates of
# full 341x256 planes and the 11-worker flow loader rates of the JPEG and LZ4 stores (160 planes a clip).
HOST_DECODE_US = {"jpeg": 1e6 / 5436, "lz4": 1e6 / 17507}
HOST_LOADER_CLIPS = {"jpeg": 230.0, "lz4": 643.6}
HOST_WORKERS = 11
PLANES_PER_CLIP = 160


@dataclass
class Codec:
    name: str
    encode: Callable[[np.ndarray], list]  # uint8 (N, H, W) → blobs
    decode: Callable[[list, int, int, tuple, bool, np.ndarray], None]  # blobs, H, W, region, mirror → out (n, h, w)
    note: str = ""


def ours(codec: str) -> Codec:
    def encode(planes):
        return [as_tensor(b) for b in encode_flow_planes(planes, codec, 95)]

    def decode(blobs, h, w, region, mirror, out):
        decode_flow_planes(blobs, codec, h, w, region, mirror, torch.from_numpy(out))

    return Codec(codec, encode, decode)


def _crop(whole: np.ndarray, region: tuple, mirror: bool, out: np.ndarray) -> None:
    top, left, rows, columns = region
    np.copyto(out, whole[top : top + rows, region_columns(left, columns, mirror)])


def reference_codecs() -> list[Codec]:
    """Other candidates, with the libraries this machine has."""
    import zstandard

    codecs = []
    try:
        import cv2

        cv2.setNumThreads(1)

        def png_encode(planes):
            return [cv2.imencode(".png", p, [cv2.IMWRITE_PNG_COMPRESSION, 6])[1] for p in planes]

        def png_decode(blobs, h, w, region, mirror, out):
            for plane, blob in zip(out, blobs):
                _crop(cv2.imdecode(blob, cv2.IMREAD_UNCHANGED), region, mirror, plane)

        codecs.append(Codec("png (OpenCV, level 6)", png_encode, png_decode, "lossless"))

        def jpeg_half_decode(blobs, h, w, region, mirror, out):  # libjpeg's DCT scaling: decode at half size, upsample
            for plane, blob in zip(out, blobs):
                small = cv2.imdecode(blob.numpy(), cv2.IMREAD_REDUCED_GRAYSCALE_2)
                _crop(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), region, mirror, plane)

        codecs.append(Codec("jpeg q95 decoded at 1/2 scale + upsample (OpenCV)", ours("jpeg").encode, jpeg_half_decode,
                            "lossy"))

        compressor, decompressor = zstandard.ZstdCompressor(level=6), zstandard.ZstdDecompressor()

        def half_encode(planes):
            h, w = planes.shape[1:]
            return [compressor.compress(cv2.resize(p, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
                    for p in planes]

        def half_decode(blobs, h, w, region, mirror, out):
            hh, hw = (h + 1) // 2, (w + 1) // 2
            top, left, rows, columns = region
            s0, c0 = max(0, top // 2 - 1), max(0, left // 2 - 1)  # the half-size window with a 1-pixel margin
            s1, c1 = min(hh, (top + rows - 1) // 2 + 2), min(hw, (left + columns - 1) // 2 + 2)
            for plane, blob in zip(out, blobs):
                small = np.frombuffer(decompressor.decompress(blob), np.uint8).reshape(hh, hw)[s0:s1, c0:c1]
                big = cv2.resize(small, (2 * (c1 - c0), 2 * (s1 - s0)), interpolation=cv2.INTER_LINEAR)
                _crop(big, (top - 2 * s0, left - 2 * c0, rows, columns), mirror, plane)

        codecs.append(Codec("half resolution, zstd 6, bilinear upsample (OpenCV)", half_encode, half_decode,
                            "lossy"))
    except ImportError:
        pass
    try:
        import imagecodecs

        for name, enc, dec in (
            ("webp lossless (imagecodecs)", lambda p: imagecodecs.webp_encode(p, lossless=True, level=6), imagecodecs.webp_decode),
            ("jpeg-ls lossless (imagecodecs)", lambda p: imagecodecs.jpegls_encode(p), imagecodecs.jpegls_decode),
            ("jpeg-ls near-lossless 1 (imagecodecs)", lambda p: imagecodecs.jpegls_encode(p, level=1),
             imagecodecs.jpegls_decode),
            ("jpeg-xl lossless, effort 3 (imagecodecs)", lambda p: imagecodecs.jpegxl_encode(p, lossless=True, effort=3),
             imagecodecs.jpegxl_decode),
            ("qoi (imagecodecs)", lambda p: imagecodecs.qoi_encode(np.repeat(p[..., None], 3, 2)),
             lambda b: imagecodecs.qoi_decode(b)[..., 0]),
        ):
            def encode(planes, enc=enc):
                return [enc(np.ascontiguousarray(p)) for p in planes]

            def decode(blobs, h, w, region, mirror, out, dec=dec):
                for plane, blob in zip(out, blobs):
                    image = dec(blob)
                    _crop(image if image.ndim == 2 else image[..., 0], region, mirror, plane)

            if name.startswith("webp"):  # WebP has no grey images: the plane in all three channels
                encode = (lambda planes, enc=enc: [imagecodecs.webp_encode(np.repeat(p[..., None], 3, 2), lossless=True,
                                                                           level=6) for p in planes])
            codecs.append(Codec(name, encode, decode, "lossy" if "near" in name else "lossless"))
    except ImportError:
        pass
    return codecs


def sample_planes(stores: list[Path], fields_per_video: int) -> tuple[list[np.ndarray], list[dict]]:
    """Exact planes of each size (one array per plane size) and, per video, its frames, flows and RGB bytes."""
    by_size: dict[tuple[int, int], list[np.ndarray]] = {}
    videos = []
    for store in stores:
        for path in sorted(store.rglob("*.mfv")):
            video = PackedVideo(path)
            if not video.num_flows:
                continue
            if video.flow_codec not in ("lz4", "zstd"):
                raise SystemExit(f"{path}: flow stored as {video.flow_codec}; this benchmark needs lossless flow (lz4 or zstd)")
            step = max(1, video.num_flows // fields_per_video)
            planes = video.read_flow(range(0, video.num_flows, step)[:fields_per_video]).numpy()
            by_size.setdefault((video.height, video.width), []).append(planes.reshape(-1, video.height, video.width))
            rgb = sum(len(blob) for blob in video.rgb_jpegs(range(video.num_frames)))
            videos.append({"store": store, "size": (video.height, video.width), "flows": video.num_flows,
                           "frames": video.num_frames, "rgb_bytes": rgb})
    return [np.concatenate(v) for v in by_size.values()], videos


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) CPU seconds of this thread over `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        fn()
        times.append(time.thread_time() - started)
    return statistics.median(times), min(times), max(times)


def measure(codec: Codec, groups: list[np.ndarray], repeats: int, bound: float):
    """Bytes per plane (by size), decode and encode µs per plane (median, min, max; the largest size) and error."""
    result = {"bytes": {}}
    errors, worst = [], 0
    for planes in groups:
        h, w = planes.shape[1:]
        blobs = codec.encode(planes)
        result["bytes"][(h, w)] = float(np.mean([len(b) for b in blobs]))
        whole = np.empty_like(planes[:STACK])
        for start in range(0, len(planes), STACK):
            part = blobs[start : start + STACK]
            codec.decode(part, h, w, (0, 0, h, w), False, whole[: len(part)])
            back = whole[: len(part)].astype(np.int16)
            diff = np.abs(back - planes[start : start + len(part)])
            errors.append(diff.astype(np.float64).sum())
            worst = max(worst, int(diff.max()))
    result["error_mean"] = sum(errors) / sum(p.size for p in groups)
    result["error_max"] = worst
    result["step_px"] = 2 * bound / 255
    croppable = [g for g in groups if min(g.shape[1:]) >= CROP]
    if not croppable:
        return result
    planes = max(croppable, key=len)  # the most common plane size that holds a crop
    h, w = planes.shape[1:]
    planes = planes[: max(STACK, len(planes) // STACK * STACK)]
    blobs = codec.encode(planes)
    region = ((h - CROP) // 2, (w - CROP) // 2 - 7, CROP, CROP)  # off-centre, as random crops are

    def decode_all():  # every other stack mirrored, as training's random flips
        for k, start in enumerate(range(0, len(blobs), STACK)):
            part = blobs[start : start + STACK]
            codec.decode(part, h, w, region, k % 2 == 1, out[: len(part)])

    out = np.empty((STACK, CROP, CROP), np.uint8)
    decode_all()  # warm caches and contexts
    result["decode_all"], result["planes"] = decode_all, len(blobs)
    result["encode_us"] = tuple(t * 1e6 / len(planes) for t in timed(lambda: codec.encode(planes), max(1, repeats // 2)))
    result["size"] = (h, w)
    return result


def time_decoding(results: dict, repeats: int) -> None:
    """decode_us = (median, min, max) µs per plane, the codecs taking turns in each pass so that the load of
    a shared machine drifts over all of them alike."""
    passes: dict[str, list[float]] = {name: [] for name, r in results.items() if "decode_all" in r}
    for _ in range(repeats):
        for name in passes:
            r = results[name]
            passes[name].append(timed(r["decode_all"], 1)[0] * 1e6 / r["planes"])
    for name, times in passes.items():
        results[name]["decode_us"] = (statistics.median(times), min(times), max(times))


def host_model() -> tuple[float, float]:
    """(a, b): a loader worker of the host spends a·decode + b µs per plane (decode: the one-core decode
    time there), fitted to the two loader rates measured there (JPEG and LZ4 stores)."""
    per_plane = {c: HOST_WORKERS / (HOST_LOADER_CLIPS[c] * PLANES_PER_CLIP) * 1e6 for c in HOST_LOADER_CLIPS}
    a = (per_plane["jpeg"] - per_plane["lz4"]) / (HOST_DECODE_US["jpeg"] - HOST_DECODE_US["lz4"])
    return a, per_plane["lz4"] - a * HOST_DECODE_US["lz4"]


def project(decode_us: float, lz4_us: float) -> tuple[float, float]:
    """(projected 11-worker flow loader clips/s on the host, µs per plane there) for a codec that decodes in
    `decode_us` here where LZ4 takes `lz4_us`: its decode time there is LZ4's times the ratio measured here."""
    a, b = host_model()
    host_decode = HOST_DECODE_US["lz4"] * decode_us / lz4_us
    cost = a * host_decode + b
    return HOST_WORKERS * 1e6 / (cost * PLANES_PER_CLIP), cost


def prepare_shared(work: Path, method: str, max_frames: int | None) -> Path:
    from mateffnet.io.annotations import folders
    from mateffnet.prepare.job import PrepareOptions, prepare_videos

    store = work / f"shared_{method}"
    options = PrepareOptions(flow_method=method, device="cpu", flow_codec="lz4", max_frames=max_frames)
    report = prepare_videos(folders(SHARED / "videos").items(), store, options, progress=True)
    print(f"prepared {report.done} clips ({report.skipped} already there) with {method} flow into {store}")
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, nargs="+", help="stores with lossless flow (default: prepare the shared clips)")
    parser.add_argument("--work", type=Path, default=None, help="where to prepare the shared clips (kept for reruns)")
    parser.add_argument("--flow-method", default="farneback", help="flow of the shared clips when preparing them")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per shared clip when preparing them")
    parser.add_argument("--fields", type=int, default=24, help="flow fields sampled per video")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per figure (median, min, max)")
    parser.add_argument("--bound", type=float, default=20.0)
    parser.add_argument("--videos-per-dataset", type=float, nargs="*", default=[240_000], metavar="N",
                        help="dataset sizes for the terabytes column (default: Kinetics-400, ~240k videos)")
    parser.add_argument("--frames-per-video", type=float, default=300, help="for the terabytes column (K400: ~10 s at 30 fps)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    stores = args.stores or [prepare_shared(args.work or Path(tempfile.mkdtemp()), args.flow_method, args.max_frames)]
    groups, videos = sample_planes(stores, args.fields)
    print(f"machine: {_machine()}; 1 core (pinned), 1 thread; torch {torch.__version__}")
    print(f"planes: {sum(len(g) for g in groups)} from {len(videos)} videos of {', '.join(map(str, stores))}; sizes "
          + ", ".join(f"{w}x{h}" for h, w in (g.shape[1:] for g in groups)))
    codecs = [ours("jpeg"), ours("lz4"), ours("zstd"), ours("zstd-near"), ours("lz4-near"), *reference_codecs()]
    results = {}
    for codec in codecs:
        results[codec.name] = measure(codec, groups, args.repeats, args.bound)
    time_decoding(results, args.repeats)
    jpeg, lz4 = results["jpeg"], results["lz4"]
    print("\n| codec | bytes/field | × JPEG | × LZ4 | decode µs/plane (224² region, half mirrored) | × JPEG's speed | × LZ4's time "
          "| encode µs/plane | error mean / max (0-255) | error mean / max (px) | projected loader clips/s (host, 11 workers) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    size = jpeg["size"]
    for name, r in results.items():
        field = 2 * r["bytes"][size]
        decode = r.get("decode_us")
        if decode:
            speed = jpeg["decode_us"][0] / decode[0]
            clips, _ = project(decode[0], lz4["decode_us"][0])
            timing = (f"{decode[0]:.0f} ({decode[1]:.0f}–{decode[2]:.0f}) | {speed:.2f} | {decode[0] / lz4['decode_us'][0]:.2f} "
                      f"| {r['encode_us'][0]:.0f} ")
        else:
            clips, timing = None, "| | | "
        px = r["step_px"]
        print(f"| {name} | {field:,.0f} | {field / (2 * jpeg['bytes'][size]):.2f} | {field / (2 * lz4['bytes'][size]):.2f} "
              f"| {timing}| {r['error_mean']:.3f} / {r['error_max']} | {r['error_mean'] * px:.4f} / {r['error_max'] * px:.2f} "
              f"| {'' if clips is None else f'{clips:.0f}'} |")
    print(f"\n(bytes/field and timings at {size[1]}x{size[0]}, the most common size that holds a 224x224 crop; error over every sampled plane)")

    print("\nbytes per video (RGB JPEGs + flow; mean over the videos of each store) and for a dataset:")
    header = "| codec | " + " | ".join(f"{s.name} bytes/video" for s in stores) + " | × JPEG | " + " | ".join(
        f"TB for {n:,.0f} videos of {args.frames_per_video:.0f} frames at 341x256" for n in args.videos_per_dataset) + " |"
    print(header)
    print("|---|" + "---:|" * (len(stores) + 1 + len(args.videos_per_dataset)))
    mean_rgb_per_frame = {}
    for name, r in results.items():
        cells, ratio = [], []
        for store in stores:
            own = [v for v in videos if v["store"] == store]
            per_video = [v["rgb_bytes"] + v["flows"] * 2 * r["bytes"][v["size"]] for v in own]
            jpeg_video = [v["rgb_bytes"] + v["flows"] * 2 * jpeg["bytes"][v["size"]] for v in own]
            cells.append(f"{np.mean(per_video):,.0f}")
            ratio.append(np.mean(per_video) / np.mean(jpeg_video))
            big = [v for v in own if v["size"] == size]
            if big:
                mean_rgb_per_frame[store] = sum(v["rgb_bytes"] for v in big) / sum(v["frames"] for v in big)
        rgb_frame = np.mean(list(mean_rgb_per_frame.values())) if mean_rgb_per_frame else 0.0
        video_bytes = args.frames_per_video * (rgb_frame + 2 * r["bytes"][size])
        tb = " | ".join(f"{n * video_bytes / 1e12:.2f}" for n in args.videos_per_dataset)
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(ratio):.2f} | {tb} |")
    a, b = host_model()
    print(f"\nprojection: a loader worker of the 16-core host spends a·decode + b per plane, a = {a:.2f}, b = {b:.1f} µs "
          f"(fitted to the host's JPEG and LZ4 loader rates {HOST_LOADER_CLIPS['jpeg']:.0f} / {HOST_LOADER_CLIPS['lz4']:.0f} "
          f"clips/s); a projection, not a measurement")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
