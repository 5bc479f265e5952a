"""Dataset-scale flow extraction: `mateffnet prepare` pairs/s with one process and with N shard processes.

    python benchmarks/prepare_speed.py                     # 48 ten-second 340x256 videos, CUDA if present
    python benchmarks/prepare_speed.py --videos 48 --shards 1 2 4

Generates the videos (a moving texture, 25 fps, H.264) once, then runs `mateffnet prepare` on them
(TV-L1, the fast fixed schedule, short side 256) as one process and as N `--shard i/N` processes side by
side (what a job array or one process per GPU does; on a one-GPU machine they share it), each into a fresh
store, and prints pairs/s (wall clock, and inside prepare: without starting Python and importing torch)
and whether the sharded stores hold exactly the single run's files. The first row is the flow kernel
alone on the same pairs (no decoding, no JPEG, no files): the ceiling; with several --shards, the kernel alone
in 1 and N processes at once on the device too (N processes sharing one GPU take turns). Before the timed runs, a prepare
of 2 videos compiles the Triton flow kernels for every batch shape (once per machine; `--no-warmup`).
The last column divides the rate inside prepare by the kernel alone in as many processes.

    python benchmarks/prepare_speed.py --videos 288 --shards 1 2 --mps

`--mps` then repeats the rows of several processes under CUDA's Multi-Process Service (a control daemon
started for them, with its pipe and log folders in the work folder, and stopped afterwards), which lets
the processes' kernels share the GPU at once instead of taking turns; it needs `nvidia-cuda-mps-control`.

    python benchmarks/prepare_speed.py --kernel none --videos 6 --workers 1 2   # any machine, no GPU needed

`--kernel none` measures what prepare costs besides its flow kernel: prepare runs in this Python process
(after a warm-up run that starts the workers' server) with flow batched across videos, and the device's
work (gathering the pairs, flow, quantisation, the copy back) replaced by a stand-in that returns flow
codes of the right shape and dtype; the host's work around it stays (receiving frames, uploading them,
handing the flow to the workers). The table gives the batches the kernel was given, pairs/s, the main
process's CPU time per pair (all its threads) and the part of it in bulk copies, the workers' CPU time
per pair (decode, RGB JPEG, flow encoding, writing), bytes through pipes per pair (counted in the main
process, both ways), and the ceilings those imply on a host of `--cores` cores: the main process can
handle at most 1 / (main CPU per pair) pairs/s besides launching the kernel, the workers can feed at
most (cores - 1) / (workers' CPU per pair). Run with PYTHONPATH at another checkout's src to measure
that code (the stand-in knows the code before shared memory too).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import shutil
import subprocess
import threading
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"


def make_videos(folder: Path, count: int, seconds: int, fps: int = 25) -> list[Path]:
    """`count` videos of `seconds` s in `folder` (those not there yet), made side by side on every core."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{index:03d}.mp4" for index in range(count)]
    todo = [(path, index, seconds, fps) for index, path in enumerate(paths) if not path.exists()]
    if len(todo) == 1:  # in this process: a caller that already uses CUDA or torch's threads must not fork
        threads = torch.get_num_threads()
        make_video(*todo[0])
        torch.set_num_threads(threads)
    elif todo:  # forked before this process has used CUDA or torch's thread pool
        with multiprocessing.get_context("fork").Pool(min(len(todo), os.cpu_count() or 1)) as pool:
            pool.starmap(make_video, todo)
    return paths


def make_video(path: Path, index: int, seconds: int, fps: int = 25, width: int = 340, height: int = 256) -> None:
    """A moving texture (H.264), written under a temporary name and renamed."""
    import av

    from mateffnet.io.decode import open_container

    torch.set_num_threads(1)
    rng = np.random.default_rng(index)
    texture = torch.from_numpy(rng.integers(0, 256, (3, height * 2, width * 2), dtype=np.uint8)).float()[None]
    texture = torch.nn.functional.avg_pool2d(texture, 7, 1, 3)[0].permute(1, 2, 0).byte().numpy()
    vx, vy = rng.uniform(-4, 4, 2)
    partial = path.with_name(path.stem + ".part.mp4")
    with open_container(partial, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        for t in range(seconds * fps):
            y, x = int(height / 2 + vy * t) % height, int(width / 2 + vx * t) % width
            frame = np.ascontiguousarray(texture[y:y + height, x:x + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)


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


def kernel_rate_side_by_side(videos: list[Path], device: str, processes: int, seconds: float = 6.0,
                             batch: int = 128) -> float:
    """Pairs/s of compute_flow alone in `processes` processes at once on the one device (all of them together):
    the ceiling of that many `--shard` processes sharing a GPU."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_kernel_child, args=(videos[0], device, batch, seconds, barrier, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    counts = []
    while len(counts) < processes:
        try:
            counts.append(results.get(timeout=5))
        except queue.Empty:
            if any(child.exitcode not in (None, 0) for child in children):
                for child in children:
                    child.kill()
                raise SystemExit("a kernel-alone process failed (its traceback is above)")
    for child in children:
        child.join()
    return sum(pairs for pairs, _ in counts) / max(elapsed for _, elapsed in counts)


def _kernel_child(video: Path, device: str, batch: int, seconds: float, barrier, results) -> None:
    from mateffnet.io.decode import read_video
    from mateffnet.flow import TVL1_FAST, compute_flow

    frames = torch.from_numpy(read_video(video, size=256)[0]).permute(0, 3, 1, 2).to(device)
    first, second = frames[:-1][:batch], frames[1:][:batch]
    cuda = device.startswith("cuda")
    compute_flow(first, second, **TVL1_FAST)
    if cuda:
        torch.cuda.synchronize()
    barrier.wait()
    started, pairs = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for _ in range(4):
            compute_flow(first, second, **TVL1_FAST)
        if cuda:
            torch.cuda.synchronize()
        pairs += 4 * len(first)
    results.put((pairs, time.perf_counter() - started))


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


@contextlib.contextmanager
def cuda_mps(control: str, folder: Path):
    """Run what the block starts under a CUDA MPS control daemon of its own (`control`: the path of
    nvidia-cuda-mps-control; processes started inside the block connect to it through the environment; this
    process keeps the context it has)."""
    settings = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "mps-log")}
    for path in settings.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings}
    subprocess.run([control, "-d"], env=env, check=True)
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        subprocess.run([control], input="quit\n", text=True, env=env, check=False)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def digests(store: Path) -> dict[str, str]:
    from mateffnet.io.store import PackedVideo

    out = {}
    for path in sorted(store.rglob("*.mfv")):
        video = PackedVideo(path)
        blobs = video.rgb_jpegs(range(video.num_frames)) + video.flow_blobs(range(video.num_flows))
        out[path.relative_to(store).as_posix()] = hashlib.md5(b"".join(b.numpy().tobytes() for b in blobs)).hexdigest()
    return out


class Descendants:
    """CPU seconds of this process's grandchildren (the workers the forkserver starts), sampled from /proc
    while they run: a worker's last fraction of a second before it exits is missed. `own` is the CPU time
    of the sampling thread (of this process, not of prepare)."""

    def __init__(self, every: float = 0.2):
        self.every, self.seen, self.stop, self.own = every, {}, threading.Event(), 0.0
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def seconds(self) -> float:
        return sum(self.seen.values())

    def _run(self):
        while not self.stop.wait(self.every):
            self._sample()
            self.own = time.thread_time()

    def _sample(self):
        parents, times = {}, {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self.tick
        me = os.getpid()
        for pid, cpu in times.items():
            ancestor = parents.get(pid)
            while ancestor not in (None, 0, 1, me):
                ancestor = parents.get(ancestor)
            if ancestor == me and parents[pid] != me:  # the workers, not the forkserver that starts them
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)


PIPE_BYTES = {"sent": 0, "received": 0}
BATCHES: list[int] = []  # pairs of each batch the stand-in kernel was given
COPYING = [0.0]  # main-process CPU seconds in the bulk copies of frames and flow (shared memory ↔ own memory)
COPIES_TIMED: list[str] = []  # the functions timed (none in the code before shared memory)


def count_copying() -> None:
    """Count in COPYING the CPU time of the main process's bulk copies (where the code has them as functions)."""
    from mateffnet.prepare import batcher, pool

    def timed(function):
        def run(*args):
            started = time.thread_time()
            try:
                return function(*args)
            finally:
                COPYING[0] += time.thread_time() - started
        return run

    for module, name in ((batcher, "_to_device"), (pool, "_gather")):
        if hasattr(module, name):
            setattr(module, name, timed(getattr(module, name)))
            COPIES_TIMED.append(name)


def count_pipe_bytes() -> None:
    """Count in PIPE_BYTES the bytes this process's multiprocessing connections send and receive (queues included)."""
    connection = multiprocessing.connection.Connection
    send, receive = connection._send_bytes, connection._recv_bytes

    def counted_send(self, buf):
        PIPE_BYTES["sent"] += len(memoryview(buf).cast("B"))
        return send(self, buf)

    def counted_receive(self, maxsize=None):
        data = receive(self, maxsize)
        PIPE_BYTES["received"] += data.getbuffer().nbytes
        return data

    connection._send_bytes, connection._recv_bytes = counted_send, counted_receive


def stand_in_kernel() -> None:
    """Replace the device's work in prepare (gathering the pairs, flow, quantisation, the copy back) by flow
    codes of the right shape and dtype; the host's work around it stays."""
    from mateffnet.prepare import batcher, pack

    results = {}  # shape → codes: the copy back of a GPU writes into cached pinned memory, not fresh pages

    def launch(runs, first, second, options, device):
        BATCHES.append(len(first))
        height, width = runs[0].shape[1:3]
        rows = torch.tensor([first, second])
        rows = (rows.pin_memory() if device.startswith("cuda") else rows).to(device, non_blocking=True)
        shape = (len(first), 2, height, width)
        if shape not in results:
            results[shape] = torch.full(shape, 128, dtype=torch.uint8)
        return results[shape], None

    def launch_before(frames, first, second, options, device):  # the code before launch_flow_codes, as it was
        on_cuda = device.startswith("cuda")
        unique = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=on_cuda)
        np.stack(frames, out=unique.numpy())
        return launch([unique.to(device, non_blocking=True)], first, second, options, device)

    if hasattr(pack, "launch_flow_codes"):
        pack.launch_flow_codes = launch
    else:  # the code before shared memory (run this script with PYTHONPATH at an older checkout's src)
        batcher.launch_quantized_flow = launch_before


def overhead(videos_dir: Path, store: Path, workers: int, device: str, cores: int) -> str:
    """One table row: prepare in this process with the stand-in kernel (see the module docstring)."""
    from mateffnet.io.annotations import folders
    from mateffnet.prepare.job import PrepareOptions, prepare_videos

    options = PrepareOptions(size=256, device=device, workers=workers, batch_across_videos=True)
    items = folders(videos_dir).items()
    prepare_videos(items[:1], store.with_name(store.name + "_warmup"), options, progress=False)  # the forkserver
    PIPE_BYTES.update(sent=0, received=0)
    BATCHES.clear()
    COPYING[0] = 0.0
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with Descendants() as descendants:
        report = prepare_videos(items, store, options, progress=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if report.failed or not report.flow_pairs:
        raise SystemExit(f"prepare failed: {report.summary()}")
    pairs = report.flow_pairs
    main_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime - descendants.own) / pairs
    worker_cpu = descendants.seconds() / pairs
    piped = (PIPE_BYTES["sent"] + PIPE_BYTES["received"]) / pairs
    full = sum(size == options.flow_batch for size in BATCHES)
    return (f"| {workers} | {pairs} | {len(BATCHES)} ({full} full) | {pairs / seconds:.0f} | {1e3 * main_cpu:.3f} | "
            f"{f'{1e3 * COPYING[0] / pairs:.3f}' if COPIES_TIMED else 'not timed'} | "
            f"{1e3 * worker_cpu:.2f} | {piped:.0f} | {1 / main_cpu:.0f} | {(cores - 1) / worker_cpu:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--kernel", choices=["tvl1", "none"], default="tvl1",
                        help="none: prepare's cost without its flow kernel (see above)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="--kernel none: worker counts to run")
    parser.add_argument("--cores", type=int, default=16, help="--kernel none: the host the ceilings are for")
    parser.add_argument("--mps", action="store_true",
                        help="repeat the rows of several processes under CUDA MPS (see above)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time the first prepare on this machine too (its kernel compilation included)")
    args = parser.parse_args()
    mps_control = shutil.which("nvidia-cuda-mps-control") if args.mps else None
    if args.mps and mps_control is None:
        raise SystemExit("--mps: nvidia-cuda-mps-control is not on PATH (it comes with the NVIDIA driver)")
    work = args.work or Path(tempfile.mkdtemp(prefix="mateffnet-prepare-bench-"))
    videos = make_videos(work / "videos", args.videos, args.seconds)
    pairs = args.videos * (args.seconds * 25 - 1)
    if args.kernel == "none":
        stand_in_kernel()
        count_pipe_bytes()
        count_copying()
        print(f"{args.videos} videos × {args.seconds} s at 25 fps, 340x256 → {pairs} flow pairs; flow kernel replaced "
              f"by a stand-in on {args.device}; this machine has {os.cpu_count()} CPU cores")
        print(f"\n| workers | pairs | batches | pairs/s | main CPU ms/pair | of it copying | workers CPU ms/pair | pipe bytes/pair | "
              f"main-process ceiling pairs/s | workers' ceiling on {args.cores} cores pairs/s |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for workers in args.workers or [max(1, (os.cpu_count() or 2) - 1)]:
            print(overhead(work / "videos", work / f"store_none_{workers}_{time.time_ns()}", workers, args.device,
                           args.cores), flush=True)
        return 0
    print(f"{args.videos} videos × {args.seconds} s at 25 fps, 340x256 → {pairs} flow pairs; device {args.device}; "
          f"{os.cpu_count()} CPU cores" + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("\n| what | processes | seconds | pairs/s | seconds inside prepare | pairs/s inside prepare | "
          "÷ kernel (inside) | same files as one process |\n|---|---:|---:|---:|---:|---:|---:|---|")
    kernel = {1: kernel_rate(videos, args.device)}
    print(f"| TV-L1 kernel alone (batch 128, frames on the device) | 1 | | {kernel[1]:.0f} | | | | |", flush=True)

    def kernel_rows(label: str) -> None:
        for processes in sorted({1, *args.shards}):
            if processes > 1 or len(args.shards) > 1:
                kernel[processes] = kernel_rate_side_by_side(videos, args.device, processes)
                print(f"| TV-L1 kernel alone, {processes} process{'es' if processes > 1 else ''} at once on the device "
                      f"(all together){label} | {processes} | | {kernel[processes]:.0f} | | | | |", flush=True)

    reference = None

    def prepare_rows(shard_counts: list[int], label: str) -> None:
        nonlocal reference
        for shards in shard_counts:
            store = work / f"store_{shards}{label.strip(', ').replace(' ', '_')}"
            seconds, inside = run_prepare(work / "videos", store, shards, args.device)
            found = digests(store)
            reference = reference or found
            same = "yes" if found == reference else f"NO ({len(found)} vs {len(reference)} files)"
            print(f"| mateffnet prepare (decode, TV-L1, JPEG, pack){label} | {shards} | {seconds:.1f} | "
                  f"{pairs / seconds:.0f} | {inside:.1f} | {pairs / inside:.0f} | {pairs / inside / kernel[shards]:.2f} | "
                  f"{same} |", flush=True)

    kernel_rows("")
    if args.warmup:  # a fresh machine compiles the Triton kernels (every batch shape class) once
        warm = work / "warmup_videos"
        warm.mkdir(exist_ok=True)
        for video in videos[:2]:
            if not (warm / video.name).exists():
                os.link(video, warm / video.name)
        seconds, _ = run_prepare(warm, work / "store_warmup", 1, args.device)
        print(f"| first prepare on this machine (2 videos: compiles the flow kernels) | 1 | {seconds:.1f} | | | | | |",
              flush=True)
    prepare_rows(args.shards, "")
    several = [shards for shards in args.shards if shards > 1]
    if args.mps and several:
        with cuda_mps(mps_control, work):
            kernel_rows(", MPS")
            prepare_rows(several, ", MPS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
