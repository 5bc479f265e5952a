"""Dataset-scale flow extraction: `mateffnet prepare` pairs/s with one process and with N shard processes.

    python benchmarks/prepare_speed.py                     # 48 ten-second 340x256 videos, CUDA if present
    python benchmarks/prepare_speed.py --videos 48 --shards 1 2 4

Generates the videos (a moving texture, 25 fps, H.264) once, then runs `mateffnet prepare` on them
(TV-L1, the fast fixed schedule, short side 256) as one process and as N `--shard i/N` processes side by
side (what a job array or one process per GPU does; on a one-GPU machine they share it), each into a fresh
store, and prints pairs/s (wall clock, and inside prepare: without starting Python and importing torch)
and whether the sharded stores hold exactly the single run's files. The first row is the flow kernel
alone on the same pairs (no decoding, no JPEG, no files): the ceiling. Before the timed runs, a prepare
of 2 videos compiles the Triton flow kernels for every batch shape (once per machine; `--no-warmup`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"


def make_videos(folder: Path, count: int, seconds: int, fps: int = 25, width: int = 340, height: int = 256) -> list[Path]:
    import av

    from mateffnet.io.decode import open_container

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"clip_{index:03d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(index)
        texture = torch.from_numpy(rng.integers(0, 256, (3, height * 2, width * 2), dtype=np.uint8)).float()[None]
        texture = torch.nn.functional.avg_pool2d(texture, 7, 1, 3)[0].permute(1, 2, 0).byte().numpy()
        vx, vy = rng.uniform(-4, 4, 2)
        with open_container(path, "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for t in range(seconds * fps):
                y, x = int(height / 2 + vy * t) % height, int(width / 2 + vx * t) % width
                frame = np.ascontiguousarray(texture[y:y + height, x:x + width])
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return paths


def kernel_rate(videos: list[Path], device: str, batch: int = 128) -> float:
    """Pairs/s of compute_flow alone on the first video's frames, already on the device."""
    from mateffnet.io.decode import read_video
    from mateffnet.flow import TVL1_FAST, compute_flow

    frames = torch.from_numpy(read_video(videos[0], size=256)[0]).permute(0, 3, 1, 2).to(device)
    first, second = frames[:-1][:batch], frames[1:][:batch]
    compute_flow(first, second, **TVL1_FAST)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started, runs = time.perf_counter(), 3
    for _ in range(runs):
        compute_flow(first, second, **TVL1_FAST)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return runs * len(first) / (time.perf_counter() - started)


def run_prepare(videos_dir: Path, store: Path, shards: int, device: str) -> tuple[float, float]:
    """(wall seconds for `shards` prepare processes side by side, each its share of the videos;
    the longest time a process spent inside prepare, i.e. without starting Python and importing torch)."""
    import json

    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    processes = []
    for shard in range(shards):
        command = [sys.executable, "-m", "mateffnet", "prepare", str(videos_dir), "--out", str(store), "--format",
                   "folders", "--device", device, "--no-progress", "--workers", str(max(1, cores // shards - 1))]
        if shards > 1:
            command += ["--shard", f"{shard}/{shards}"]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output = process.communicate()[0]
        if process.returncode != 0:
            raise SystemExit(f"prepare failed:\n{output}")
    wall = time.perf_counter() - started
    inside = max(json.loads(report.read_text())["seconds"] for report in store.glob("report*.json"))
    return wall, inside


def digests(store: Path) -> dict[str, str]:
    from mateffnet.io.store import PackedVideo

    out = {}
    for path in sorted(store.rglob("*.mfv")):
        video = PackedVideo(path)
        blobs = video.rgb_jpegs(range(video.num_frames)) + video.flow_blobs(range(video.num_flows))
        out[path.relative_to(store).as_posix()] = hashlib.md5(b"".join(b.numpy().tobytes() for b in blobs)).hexdigest()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time the first prepare on this machine too (its kernel compilation included)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mateffnet-prepare-bench-"))
    videos = make_videos(work / "videos", args.videos, args.seconds)
    pairs = args.videos * (args.seconds * 25 - 1)
    print(f"{args.videos} videos × {args.seconds} s at 25 fps, 340x256 → {pairs} flow pairs; device {args.device}; "
          f"{os.cpu_count()} CPU cores" + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("\n| what | processes | seconds | pairs/s | seconds inside prepare | pairs/s inside prepare | "
          "same files as one process |\n|---|---:|---:|---:|---:|---:|---|")
    print(f"| TV-L1 kernel alone (batch 128, frames on the device) | 1 | | {kernel_rate(videos, args.device):.0f} | | | |",
          flush=True)
    if args.warmup:  # a fresh machine compiles the Triton kernels (every batch shape class) once
        warm = work / "warmup_videos"
        warm.mkdir(exist_ok=True)
        for video in videos[:2]:
            if not (warm / video.name).exists():
                os.link(video, warm / video.name)
        seconds, _ = run_prepare(warm, work / "store_warmup", 1, args.device)
        print(f"| first prepare on this machine (2 videos: compiles the flow kernels) | 1 | {seconds:.1f} | | | | |",
              flush=True)
    reference = None
    for shards in args.shards:
        store = work / f"store_{shards}"
        seconds, inside = run_prepare(work / "videos", store, shards, args.device)
        found = digests(store)
        reference = reference or found
        same = "yes" if found == reference else f"NO ({len(found)} vs {len(reference)} files)"
        print(f"| mateffnet prepare (decode, TV-L1, JPEG, pack) | {shards} | {seconds:.1f} | {pairs / seconds:.0f} | "
              f"{inside:.1f} | {pairs / inside:.0f} | {same} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
