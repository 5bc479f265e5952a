"""End-to-end time to classify one 10-second video with both streams (decode + flow + networks).

    python benchmarks/predict_speed.py                       # CPU, and CUDA when present
    python benchmarks/predict_speed.py --video clip.mp4 --segments 25 --repeats 5

The video defaults to a generated 10 s, 25 fps, 340x256 H.264 clip of a moving texture (250 frames,
made as benchmarks/prepare_speed.py makes its videos).
The model is a two-stream MAT-EffNet on EfficientNet-B0 (random weights: the time does not depend on
them) with the test protocol of `mateffnet predict`: 25 segments × 1 centre crop per stream, flow
stacks of 10 TV-L1 fields (only the needed ones are computed; the fast fixed schedule prepare uses).
Rows: the whole `predict` call (median of --repeats, after a warm-up on CUDA) and, on CUDA, where the time
goes; on the CPU a reference row computes the flow with OpenCV's Farneback instead of TV-L1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_speed import make_videos  # noqa: E402

from mateffnet.flow import TVL1_FAST
from mateffnet.engine.inference import decode_for, predict, stream_views
from mateffnet.models import StreamNet, TwoStreamNet


def two_stream(device: torch.device, flow_method: str) -> TwoStreamNet:
    torch.manual_seed(0)
    options = dict(frame_size="256", flow_method=flow_method, flow_params=dict(TVL1_FAST) if flow_method == "tvl1" else {})
    return TwoStreamNet(StreamNet(101, modality="rgb", **options), StreamNet(101, modality="flow", **options)).to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats):
    if device.type == "cuda":
        function()  # warm-up: Triton kernels compiled, cuDNN plans chosen
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        function()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def breakdown(model: TwoStreamNet, video: Path, device: torch.device, segments: int, repeats: int) -> dict:
    frames = decode_for(model.rgb, video)
    parts = {"decode (PyAV, 250 frames at 340x256)": timed(lambda: decode_for(model.rgb, video), device, repeats)}
    parts["RGB views"] = timed(lambda: stream_views(frames, model.rgb, segments, 1, device), device, repeats)
    parts[f"flow views ({model.flow.config.flow_method}, {segments} stacks × {model.flow.config.flow_length})"] = timed(
        lambda: stream_views(frames, model.flow, segments, 1, device), device, repeats)
    rgb = stream_views(frames, model.rgb, segments, 1, device)
    flow = stream_views(frames, model.flow, segments, 1, device)

    @torch.no_grad()
    def networks():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model.rgb(rgb), model.flow(flow)

    parts["both networks (25 segments each)"] = timed(networks, device, repeats)
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--segments", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    args = parser.parse_args()
    video = args.video or make_videos(Path(tempfile.mkdtemp()), count=1, seconds=10)[0]
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"video: {video}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads"
          + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("\n| device | flow | what | seconds per video |\n|---|---|---|---:|")
    for name in devices:
        device = torch.device(name)
        for flow_method in (("tvl1", "farneback") if name == "cpu" else ("tvl1",)):
            model = two_stream(device, flow_method)
            total = timed(lambda: list(predict([video], model, args.segments, 1, device)), device, args.repeats)
            print(f"| {name} | {flow_method} | **mateffnet predict, end to end** | **{total:.2f}** |", flush=True)
            if flow_method == "tvl1" and name != "cpu":  # on the CPU the flow is nearly all of it
                for what, seconds in breakdown(model, video, device, args.segments, args.repeats).items():
                    print(f"| {name} | {flow_method} | {what} | {seconds:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
