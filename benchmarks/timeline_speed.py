"""Recognition over time: timeline's real-time factor, watch's latency and the frame rate it keeps up with,
features' snippets/s. Both streams, MAT-EffNet on EfficientNet-B0 (random weights: the time does not
depend on them), frames decoded at 340x256 (short side 256), 8 test segments per window, 1 centre crop.

    python benchmarks/timeline_speed.py                      # CUDA when present (TV-L1), else CPU (Farneback)
    python benchmarks/timeline_speed.py --device cpu --minutes 1 --watch-seconds 0
    python benchmarks/timeline_speed.py --reference-windows 0 --watch-seconds 0 --features-seconds 0   # timeline only

Rows (ours vs a reference where one exists, with the ratio):
- timeline: `mateffnet timeline`'s code path (stream decode in a background thread, flow once per frame pair,
  windows batched, a batch queued on the device before the previous one's scores are waited for) over a
  generated `--minutes` video, 4 s windows every 1 s, against three references on the same video:
  the same steps one after the other (decode, flow, networks, wait for the scores: the loop before the
  overlap; `--no-serial` skips it); the flow alone on the video's first `--kernel-pairs` pairs already on the
  device, as a real-time factor for the pairs the timeline computed (the ceiling: the windows need the flow
  of nearly every pair); and `predict_video` called on each window's frames (what a user script around
  predict does: every window's flow recomputed), timed on the first `--reference-windows` windows.
  Decoding alone is a row of its own.
- watch: the real `watch` loop on a generated file played at its real rate (`--realtime`), 4 s window, a
  prediction every 1 s, at each of `--watch-fps`: median / max latency and the frames it had to drop.
- features: `mateffnet features`' path on the video, stride 4 frames, pooled features of both streams.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_speed import make_videos  # noqa: E402

from mateffnet.commands.features import FeatureOptions, video_features
from mateffnet.commands.watch import WatchOptions, watch
from mateffnet.engine.windows import WindowScorer, decoded_frames, frames_ahead, score_frames, window_batches
from mateffnet.flow import TVL1_FAST
from mateffnet.engine.inference import pair_flows, predict_video, to_device
from mateffnet.models import StreamNet, TwoStreamNet

WINDOW_S, STRIDE_S, SEGMENTS = 4.0, 1.0, 8


def two_stream(device: torch.device, flow_method: str) -> TwoStreamNet:
    torch.manual_seed(0)
    options = dict(frame_size="256", flow_method=flow_method, flow_params=dict(TVL1_FAST) if flow_method == "tvl1" else {},
                   class_names=[f"class_{i}" for i in range(101)])
    return TwoStreamNet(StreamNet(101, modality="rgb", **options), StreamNet(101, modality="flow", **options)).to(device).eval()


def rt(factor: float) -> str:
    """A real-time factor for the table (two decimals under 10x, where CPU runs land)."""
    return f"{factor:.1f}x real time" if factor >= 10 else f"{factor:.2f}x real time"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeline_rate(model, video, device, batch, overlapped=True, max_windows=None):
    """(seconds of video per second, windows, flow fields computed, seconds of video) of the timeline path;
    `overlapped=False`: the loop before decoding ahead and queueing (decode, flow, networks, wait, in turn)."""
    scorer = WindowScorer(model, SEGMENTS, 1, device)
    started = time.perf_counter()
    windows = end = 0
    with decoded_frames(video, scorer.sizes) as (info, decoded), contextlib.ExitStack() as stack:
        length, stride = round(WINDOW_S * info.fps), round(STRIDE_S * info.fps)
        if overlapped:
            frames = stack.enter_context(frames_ahead(decoded, batch * stride))
            batches = (windows for windows, _, _ in score_frames(frames, scorer, length, stride, batch))
        else:
            batches = serial_batches(decoded, scorer, length, stride, batch)
        for batch_windows in batches:
            windows += len(batch_windows)
            end = batch_windows[-1].end
            if max_windows and windows >= max_windows:
                break
    sync(device)
    return end / info.fps / (time.perf_counter() - started), windows, scorer.flows_computed, end / info.fps


def serial_batches(frames, scorer, length, stride, batch):
    """The windows, `batch` at a time, scored one step after the other: decode in this thread, flow, networks,
    wait for the scores."""
    for windows, ring in window_batches(frames, length, stride, batch):
        scorer.prefetch_flows(windows, ring)
        scorer.score(windows, ring)
        scorer.forget_before(windows[-1].start + stride)
        yield windows


def flow_kernel_rate(model, video, device, pairs):
    """Frame pairs per second of the flow alone: `pairs` consecutive pairs of the video already on the device, in
    the timeline's flow batches (the ceiling of a path that needs the flow of every pair)."""
    from mateffnet.io.decode import read_video

    frames = to_device(read_video(video, size=256, max_frames=pairs + 1)[0], device)
    pairs = len(frames) - 1
    first = np.arange(pairs)
    pair_flows(frames, first[:min(pairs, 16)], first[:min(pairs, 16)] + 1, model.flow)  # warm
    sync(device)
    started = time.perf_counter()
    pair_flows(frames, first, first + 1, model.flow)
    sync(device)
    return pairs / (time.perf_counter() - started)


def decode_rate(model, video):
    """Seconds of video per second of decoding alone (PyAV, every frame at the streams' frame size)."""
    sizes = list(dict.fromkeys(stream.config.frame_size for stream in model.streams.values()))
    started = time.perf_counter()
    with decoded_frames(video, sizes) as (info, frames):
        count = sum(1 for _ in frames)
    return count / info.fps / (time.perf_counter() - started)


def reference_rate(model, video, device, windows):
    """Seconds of video per second when each window's frames go through predict_video on their own."""
    from mateffnet.io.decode import read_video

    frames, info = read_video(video, size=256, max_frames=round((windows - 1) * STRIDE_S * 25 + WINDOW_S * 25))
    length, stride = round(WINDOW_S * info.fps), round(STRIDE_S * info.fps)
    started = time.perf_counter()
    for k in range(windows):  # decoding not counted: the reference is given its frames
        predict_video(model, {"256": frames[k * stride:k * stride + length]}, SEGMENTS, 1, device)
    sync(device)
    return ((windows - 1) * STRIDE_S + WINDOW_S) / (time.perf_counter() - started)


def play(model, video, device, seconds):
    options = WatchOptions(window=WINDOW_S, every=STRIDE_S, segments=SEGMENTS, realtime=True,
                           max_predictions=max(1, int((seconds - WINDOW_S) / STRIDE_S)))
    summary = watch(str(video), model, options, device, emit=lambda line: None)
    latencies = [p["latency"] for p in summary.predictions]
    return summary, statistics.median(latencies), max(latencies)


def rate_video(folder: Path, fps: int, seconds: int) -> Path:
    """A 340x256 video of `seconds` at `fps` (the moving texture of prepare_speed)."""
    (path,) = make_videos(folder / f"fps{fps}", 1, seconds, fps=fps)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the timeline video (default 10; 0: skip)")
    parser.add_argument("--batch", type=int, default=16, help="windows per forward pass (default 16)")
    parser.add_argument("--reference-windows", type=int, default=30, help="windows timed through predict (0: skip)")
    parser.add_argument("--no-serial", action="store_true", help="skip the serial loop (decode, flow, networks in turn)")
    parser.add_argument("--kernel-pairs", type=int, default=None,
                        help="frame pairs timed for the flow alone (default 1024 on CUDA, 32 on CPU; 0: skip)")
    parser.add_argument("--watch-fps", type=int, nargs="*", default=[30, 60, 120])
    parser.add_argument("--watch-seconds", type=int, default=14, help="seconds played per rate (0: skip watch)")
    parser.add_argument("--features-seconds", type=int, default=60, help="video length for features (0: skip)")
    parser.add_argument("--folder", type=Path, help="where the generated videos go (default: a temporary folder)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    method = "tvl1" if device.type == "cuda" else "farneback"
    if args.kernel_pairs is None:
        args.kernel_pairs = 1024 if device.type == "cuda" else 32
    model = two_stream(device, method)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="timeline_speed_"))
    rows = []
    (warm,) = make_videos(folder / "warm", 1, 12)
    if device.type == "cuda":  # warm-up: kernels compiled, cuDNN plans chosen
        timeline_rate(model, warm, device, args.batch)
        timeline_rate(model, warm, device, args.batch, overlapped=False)
        torch.cuda.synchronize()
    if args.minutes:
        started = time.perf_counter()
        (video,) = make_videos(folder / "long", 1, int(args.minutes * 60))
        print(f"device {device}, flow {method}; generated a {args.minutes:g} min 25 fps 340x256 video in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        rate, windows, flows, seconds = timeline_rate(model, video, device, args.batch)
        what = f"timeline, {args.minutes:g} min video ({windows} windows, {flows} flow fields)"
        if not args.no_serial:
            serial = timeline_rate(model, video, device, args.batch, overlapped=False)[0]
            rows.append((what, rt(rate), f"{rt(serial)} (the same steps one after the other)",
                         f"{rate / serial:.2f}x"))
            print(rows[-1], flush=True)
        if args.kernel_pairs:
            pairs_per_s = flow_kernel_rate(model, video, device, args.kernel_pairs)
            ceiling = pairs_per_s * seconds / flows
            rows.append((f"{what} against its flow alone", rt(rate),
                         f"{rt(ceiling)} ({method} alone on the video's first {args.kernel_pairs} pairs, frames on "
                         f"the device: {pairs_per_s:.0f} pairs/s)", f"{rate / ceiling:.2f} of the ceiling"))
            print(rows[-1], flush=True)
        rows.append((f"decoding alone, {args.minutes:g} min video (PyAV, 340x256)", rt(decode_rate(model, video)),
                     "", ""))
        print(rows[-1], flush=True)
        if args.reference_windows:
            reference = reference_rate(model, video, device, min(args.reference_windows, windows))
            rows.append((what, rt(rate), f"{rt(reference)} (predict per window)",
                         f"{rate / reference:.2f}x"))
            print(rows[-1], flush=True)

    if args.features_seconds:
        (clip,) = make_videos(folder / "features", 1, args.features_seconds)
        started = time.perf_counter()
        arrays, info = video_features(clip, model, FeatureOptions(stride=4, batch=64), device)
        sync(device)
        seconds = time.perf_counter() - started
        rows.append((f"features, {args.features_seconds} s video, stride 4, both streams pooled",
                     f"{info['snippets'] / seconds:.1f} snippets/s", "", ""))
        print(rows[-1], flush=True)

    if args.watch_seconds:
        for fps in args.watch_fps:
            clip = rate_video(folder, fps, args.watch_seconds)
            summary, median, worst = play(model, clip, device, args.watch_seconds)
            kept = summary.dropped_decode == 0 and summary.skipped_ticks == 0
            rows.append((f"watch, {fps} fps 340x256 source, 4 s window, every 1 s",
                         f"latency median {median:.3f} s, max {worst:.3f} s",
                         f"{summary.dropped_decode} of {summary.frames} frames dropped, {summary.skipped_ticks} ticks late",
                         "keeps up" if kept else "falls behind"))
            print(rows[-1], flush=True)

    print(f"\n| what ({device}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}) | ours | "
          "reference / notes | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
