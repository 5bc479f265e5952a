"""`mateffnet prepare`: every listed video → one packed file (RGB JPEGs + quantised flow) in a store.

Each video is decoded once, resized, its optical flow computed, and everything written into
`STORE/<video_id>.mfv` under a temporary name that is renamed when complete. Work is spread over
worker processes, one video at a time each:

- flow on the CPU (`device="cpu"`): each worker does the whole video (decode, flow, JPEG, write);
- flow on a GPU: workers decode, resize and JPEG-encode the RGB frames and send the frames to the
  main process, which computes flow for large batches of frame pairs drawn from several videos at
  once on the GPU, quantises it there and sends it back to the video's worker to be encoded and
  written. A batch only mixes videos of the same frame size; the GPU computes one batch while the
  main process receives the frames of the next.

A worker that dies (a decoder crash) fails its video only; a replacement is started. Reruns skip
videos whose packed file opens and checks out, redo half-written or damaged ones, and remove
leftover temporary files. Sharding (`shard=(i, n)`, or torchrun's RANK/WORLD_SIZE) splits the
videos between processes/machines writing into the same store.

The run ends with a `PrepareReport` (also written to `STORE/report.json`): videos listed, missing,
done, skipped (already done) and failed, the missing names, and each failure with its reason.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mateffnet.data.annotations import VideoItem, load_annotations, split_missing
from mateffnet.data.decode import Size, VideoDecodeError, VideoReader
from mateffnet.data.store import PackedVideo, PackedVideoWriter, StoreError, store_path
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json

STORE_SETTINGS = "store.json"
CPU_ONLY_FLOW_METHODS = {"farneback"}
EXIT_OK, EXIT_SOME_FAILED = 0, 1


@dataclasses.dataclass
class PrepareOptions:
    size: Size = 256  # short side, or (width, height) e.g. (340, 256); None keeps the original size
    flow_method: str = "tvl1"  # a method of mateffnet.flow.compute_flow, or "none" for RGB only
    flow_bound: float = 20.0
    flow_params: dict | None = None  # None: TV-L1's fixed fast schedule (mateffnet.flow.TVL1_FAST); {} for its OpenCV defaults
    device: str = "auto"  # where flow is computed: auto (CUDA if available), cpu, cuda, cuda:N
    workers: int | None = None  # decoding processes; None = one per CPU core; 0 = all in this process
    max_frames: int | None = None  # keep only the first frames of each video (tests, previews)
    rgb_quality: int = 90
    flow_quality: int = 95
    flow_codec: str = "lz4-near"  # how flow planes are stored: one of mateffnet.data.flowcodec.FLOW_CODECS
    flow_batch: int = 128  # frame pairs per compute_flow call
    chunk_frames: int = 64  # frames decoded and handed on at a time
    shard: tuple[int, int] | None = None  # (i, n): this process does every n-th video from i; None = torchrun's or (0, 1)
    verify: bool = False  # rerun: also check the image checksums of finished files (reads them fully)
    batch_across_videos: bool | None = None  # flow in the main process over pairs of several videos; None = on CUDA

    def __post_init__(self):
        if self.flow_params is None:
            from mateffnet.flow import TVL1_FAST

            self.flow_params = dict(TVL1_FAST) if self.flow_method == "tvl1" else {}

    def settings(self) -> dict:
        """What a store's files depend on: a rerun must ask for the same."""
        return {
            "size": _size_text(self.size),
            "max_frames": self.max_frames,
            "flow_method": self.flow_method,
            "flow_bound": self.flow_bound if self.flow_method != "none" else None,
            "flow_params": self.flow_params,
            "rgb_quality": self.rgb_quality,
            "flow_codec": self.flow_codec if self.flow_method != "none" else None,
            "flow_quality": self.flow_quality if self.flow_method != "none" and self.flow_codec == "jpeg" else None,
        }


@dataclasses.dataclass
class PrepareReport:
    store: str
    listed: int = 0
    missing: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    redone: int = 0  # of `done`: files that existed but were half-written, damaged or stale
    missing_videos: list[str] = dataclasses.field(default_factory=list)
    failures: list[dict] = dataclasses.field(default_factory=list)  # video_id, path, reason, detail
    frames: int = 0
    flow_pairs: int = 0
    seconds: float = 0.0
    shard: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    settings: dict = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    report_path: str = ""

    @property
    def exit_status(self) -> int:
        return EXIT_SOME_FAILED if self.failed or self.interrupted else EXIT_OK

    def summary(self) -> str:
        rate = f", {self.flow_pairs / self.seconds:.0f} flow pairs/s" if self.seconds and self.flow_pairs else ""
        lines = [
            f"{self.listed} listed, {self.missing} missing, {self.done} done, {self.skipped} skipped (already done), "
            f"{self.failed} failed in {self.seconds:.1f} s{rate}"
        ]
        if self.missing:
            lines.append("missing: " + _first_few([Path(p).name for p in self.missing_videos]))
        for failure in self.failures[:20]:
            lines.append(f"failed: {failure['path']}: {failure['reason']}: {failure['detail']}")
        if len(self.failures) > 20:
            lines.append(f"… and {len(self.failures) - 20} more failures in report.json")
        if self.interrupted:
            lines.append("interrupted: rerun the same command to finish (finished videos are kept)")
        return "\n".join(lines)


def _first_few(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


# ------------------------------------------------------------------------------ dataset level


def prepare_dataset(
    src: str | os.PathLike,
    store: str | os.PathLike,
    format: str = "auto",
    annotations: str | os.PathLike | None = None,
    split: int = 1,
    options: PrepareOptions | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Prepare every video the annotations list (for UCF101/HMDB51 the train and test lists of
    `split` together; for `folders` every video file under `src`) into `store`. Writes
    `store/report.json` (`report-<i>-of-<n>.json` for a shard) and returns the report."""
    ann = load_annotations(src, format, annotations, split)
    return prepare_videos(ann.items(), store, options, progress)


def prepare_videos(
    items: Iterable[VideoItem], store: str | os.PathLike, options: PrepareOptions | None = None, progress: bool = True
) -> PrepareReport:
    """Prepare `items` into the store folder; see `prepare_dataset`."""
    options = options or PrepareOptions()
    started = time.monotonic()
    store = Path(store)
    items = list(items)
    _check_unique(items)
    shard = options.shard or _torchrun_shard()
    _check_shard(shard)
    items = items[shard[0] :: shard[1]]
    _check_options(options)
    device = _resolve_device(options.device)
    name = "report.json" if shard == (0, 1) else f"report-{shard[0]}-of-{shard[1]}.json"
    report = PrepareReport(
        store=str(store), listed=len(items), shard=list(shard), settings=options.settings(), report_path=str(store / name)
    )
    present, missing = split_missing(items)
    report.missing, report.missing_videos = len(missing), [str(item.path) for item in missing]
    store.mkdir(parents=True, exist_ok=True)
    _check_store_settings(store, options)

    from tqdm.auto import tqdm

    todo, redo = [], set()
    checking = tqdm(present, desc="checking finished files", unit="video", disable=not progress or len(present) < 1000)
    for item in checking:
        state = _existing_state(item, store, options)
        if state == "done":
            report.skipped += 1
        else:
            if state == "redo":
                redo.add(item.video_id)
            _remove_temporaries(store_path(store, item.video_id))
            todo.append(item)

    try:
        for item, outcome in _run(todo, store, options, device, progress):
            if outcome["status"] == "done":
                report.done += 1
                report.redone += item.video_id in redo
                report.frames += outcome["frames"]
                report.flow_pairs += outcome["flows"]
            else:
                report.failed += 1
                report.failures.append(
                    {"video_id": item.video_id, "path": str(item.path), "reason": outcome["reason"], "detail": outcome["detail"]}
                )
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        report.seconds = round(time.monotonic() - started, 3)
        atomic_write_json(report.report_path, dataclasses.asdict(report))
    return report


def _existing_state(item: VideoItem, store: Path, options: PrepareOptions) -> str:
    """'done' (valid, same settings, same source size), 'redo' (exists but is not), or 'new'."""
    path = store_path(store, item.video_id)
    if not path.exists():
        return "new"
    try:
        video = PackedVideo(path)
        video.verify(deep=options.verify)
    except StoreError:
        return "redo"
    meta = video.meta
    try:
        source_bytes = item.path.stat().st_size
    except OSError:
        source_bytes = None
    if meta.get("settings") != options.settings() or meta.get("source", {}).get("bytes") != source_bytes:
        return "redo"
    return "done"


def _check_store_settings(store: Path, options: PrepareOptions) -> None:
    path = store / STORE_SETTINGS
    settings = options.settings()
    if path.exists():
        try:
            existing = json.loads(path.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            raise MateffnetError(f"{path}: unreadable store settings; delete it to start the store afresh") from None
        if existing != settings:
            changed = ", ".join(f"{k}={existing.get(k)!r}→{settings[k]!r}" for k in settings if existing.get(k) != settings[k])
            raise MateffnetError(
                f"{store} was prepared with other settings ({changed}); use another --out or delete {path} and the files"
            )
        return
    atomic_write_json(path, {"format": "mateffnet store", "version": 1, "settings": settings})


def _remove_temporaries(path: Path) -> None:
    """Leftovers of `atomic_path` (.<name>.<random>.tmp) from an interrupted run."""
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def _check_unique(items: list[VideoItem]) -> None:
    seen: dict[str, Path] = {}
    for item in items:
        if item.video_id in seen:
            raise MateffnetError(
                f"two videos would share the packed file {item.video_id}: {seen[item.video_id]} and {item.path}"
            )
        seen[item.video_id] = item.path


def _torchrun_shard() -> tuple[int, int]:
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is not None and world is not None:
        return int(rank), int(world)
    return 0, 1


def _check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise MateffnetError(f"bad shard {i}/{n}: expected i/n with 0 <= i < n")


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' → (2, 8)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise MateffnetError(f"bad shard {text!r}: expected i/n like 0/4") from None
    _check_shard((i, n))
    return i, n


def _check_options(options: PrepareOptions) -> None:
    from mateffnet.flow import FLOW_METHODS

    if options.flow_method != "none" and options.flow_method not in FLOW_METHODS:
        raise MateffnetError(
            f"unknown flow method {options.flow_method!r}; expected none or one of {', '.join(FLOW_METHODS)}"
        )
    if options.flow_bound <= 0:
        raise MateffnetError(f"flow bound must be > 0, got {options.flow_bound}")
    from mateffnet.data.flowcodec import check_flow_codec

    check_flow_codec(options.flow_codec)
    for name in ("rgb_quality", "flow_quality"):
        if not 1 <= getattr(options, name) <= 100:
            raise MateffnetError(f"{name} must be in 1..100, got {getattr(options, name)}")
    if options.max_frames is not None and options.max_frames < 1:
        raise MateffnetError(f"max_frames must be >= 1, got {options.max_frames}")
    if options.workers is not None and options.workers < 0:
        raise MateffnetError(f"workers must be >= 0, got {options.workers}")


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            local = os.environ.get("LOCAL_RANK")
            return f"cuda:{local}" if local is not None else "cuda"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MateffnetError(f"device {device!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise MateffnetError(f"bad device {device!r}; expected auto, cpu, cuda or cuda:N")
    return device


def _size_text(size: Size) -> str | None:
    if size is None:
        return None
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


# ------------------------------------------------------------------------ one video (worker)


def _meta(item: VideoItem, reader: VideoReader, options: PrepareOptions) -> dict:
    info = reader.info
    width, height = reader.size
    flow = None
    if options.flow_method != "none":
        flow = {
            "method": options.flow_method,
            "bound": options.flow_bound,
            "params": options.flow_params,
            "codec": options.flow_codec,
            "quality": options.flow_quality if options.flow_codec == "jpeg" else None,
        }
    from mateffnet import __version__

    return {
        "video_id": item.video_id,
        "width": width,
        "height": height,
        "fps": info.fps,
        "source": {"path": str(item.path), "bytes": item.path.stat().st_size},
        "original": {
            "width": info.width,
            "height": info.height,
            "codec": info.codec,
            "rotation": info.rotation,
            "declared_frames": info.declared_frames,
        },
        "rgb": {"codec": "jpeg", "quality": options.rgb_quality},
        "flow": flow,
        "settings": options.settings(),
        "mateffnet": __version__,
    }


def _encode_rgb(frames: np.ndarray, quality: int) -> list[bytes]:
    import torch

    from mateffnet.data.jpeg import encode_jpegs

    return encode_jpegs(torch.from_numpy(frames).permute(0, 3, 1, 2), quality)


def _encode_flow(quantized: np.ndarray, options: PrepareOptions) -> list[tuple[bytes, bytes]]:
    """uint8 (n, 2, H, W) → [(x, y), …] in the store's flow codec."""
    from mateffnet.data.flowcodec import encode_flow_planes

    n, _, h, w = quantized.shape
    blobs = encode_flow_planes(np.ascontiguousarray(quantized).reshape(2 * n, h, w), options.flow_codec, options.flow_quality)
    return list(zip(blobs[0::2], blobs[1::2]))


def _compute_quantized_flow(frames: np.ndarray, options: PrepareOptions, device: str) -> np.ndarray:
    """uint8 (n + 1, H, W, 3) consecutive frames → quantised flow uint8 (n, 2, H, W) from each to the next."""
    n = len(frames) - 1
    quantized, done = _launch_quantized_flow(list(frames), list(range(n)), list(range(1, n + 1)), options, device)
    if done is not None:
        done.synchronize()
    return quantized.numpy()


def _launch_quantized_flow(frames: list[np.ndarray], first: list[int], second: list[int], options: PrepareOptions,
                           device: str):
    """Flow from frames[first[i]] to frames[second[i]] (uint8 (H, W, 3) each, every frame uploaded once)
    → (uint8 (n, 2, H, W) CPU tensor, CUDA event or None): on CUDA the work is only queued, and the
    tensor holds the result once the event has completed."""
    import torch

    from mateffnet.flow import compute_flow, quantize_flow

    on_cuda = device.startswith("cuda")
    unique = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=on_cuda)
    np.stack(frames, out=unique.numpy())
    rows = torch.tensor([first, second])
    with torch.inference_mode():
        on_device = unique.to(device, non_blocking=True)
        # a pageable upload would wait for the GPU's previous batch: the indices go pinned too
        rows = (rows.pin_memory() if on_cuda else rows).to(device, non_blocking=True)
        frames0 = on_device[rows[0]].permute(0, 3, 1, 2)
        frames1 = on_device[rows[1]].permute(0, 3, 1, 2)
        flow = compute_flow(frames0, frames1, method=options.flow_method, **options.flow_params)
        quantized = quantize_flow(flow, options.flow_bound)
        if not on_cuda:
            return quantized.cpu(), None
        host = torch.empty(quantized.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(quantized, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done


def pack_video(item: VideoItem, path: str | os.PathLike, options: PrepareOptions, device: str = "cpu", threads: int = 0) -> dict:
    """Decode, resize, compute flow and write one packed video (flow on `device`, in this process).

    Returns {"frames", "flows", "bytes"}; raises VideoDecodeError (with a reason) on a bad video.
    """
    with VideoReader(item.path, size=options.size, threads=threads) as reader, PackedVideoWriter(path) as writer:
        previous = None
        count = flows = 0
        for chunk in reader.chunks(options.chunk_frames, options.max_frames):
            for i, blob in enumerate(_encode_rgb(chunk, options.rgb_quality)):
                writer.add_rgb(count + i, blob)
            if options.flow_method != "none":
                frames = chunk if previous is None else np.concatenate([previous[None], chunk])
                first_flow = count - (previous is not None)
                for start in range(0, len(frames) - 1, options.flow_batch):
                    stop = min(start + options.flow_batch, len(frames) - 1)
                    quantized = _compute_quantized_flow(frames[start : stop + 1], options, device)
                    for k, (x, y) in enumerate(_encode_flow(quantized, options)):
                        writer.add_flow(first_flow + start + k, x, y)
                    flows += stop - start
                previous = chunk[-1]
            count += len(chunk)
        if options.flow_method != "none" and count < 2:
            raise VideoDecodeError(item.path, "too_short", f"{count} frame; optical flow needs at least 2")
        writer.finish(_meta(item, reader, options))
    return {"frames": count, "flows": flows, "bytes": os.path.getsize(path)}


def _failure(error: BaseException) -> dict:
    if isinstance(error, VideoDecodeError):
        return {"status": "failed", "reason": error.reason, "detail": error.detail}
    if isinstance(error, MemoryError):
        return {"status": "failed", "reason": "out_of_memory", "detail": "ran out of memory on this video"}
    return {"status": "failed", "reason": "error", "detail": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}


# ------------------------------------------------------------------------------ run the work


def _run(todo: list[VideoItem], store: Path, options: PrepareOptions, device: str, progress: bool):
    """Yield (item, outcome) as videos finish; outcome has status done/failed."""
    from tqdm.auto import tqdm

    workers = options.workers if options.workers is not None else _default_workers()
    if options.flow_method in CPU_ONLY_FLOW_METHODS:
        device = "cpu"  # no GPU memory (or CUDA context per worker) for a method that cannot use it
    across = options.batch_across_videos
    if across is None:  # flow on a GPU: big batches of pairs from several videos in this process
        across = device.startswith("cuda")
    across = across and options.flow_method != "none" and workers > 0
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.05)
    started, pairs = time.monotonic(), 0
    try:
        if workers == 0:
            results = _run_in_process(todo, store, options, device)
        else:
            results = _Pool(todo, store, options, device, workers, across).results()
        for item, outcome in results:
            pairs += outcome.get("flows", 0)
            bar.update(1)
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.set_postfix(pairs_per_s=f"{pairs / elapsed:.0f}", refresh=False)
            yield item, outcome
    finally:
        bar.close()


def _default_workers() -> int:
    from mateffnet.data.loader import cores_per_process

    return cores_per_process()


def _run_in_process(todo, store, options, device):
    for item in todo:
        try:
            outcome = {"status": "done", **pack_video(item, store_path(store, item.video_id), options, device)}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            outcome = _failure(error)
        yield item, outcome


def _worker_main(worker_id: int, inbox, results, store: str, options: PrepareOptions, device: str, across: bool) -> None:
    """A worker process: one video at a time from `inbox`, messages about it to `results`."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)
    link = _Link(inbox, results)
    link.send(("ready", worker_id, None))
    while True:
        message = link.receive()
        if message is None:
            return
        if message[0] != "video":
            continue  # flow of an earlier video that failed
        _, index, item = message
        path = store_path(store, item.video_id)
        try:
            if across:
                info = _pack_with_remote_flow(worker_id, index, item, path, options, link)
            else:
                info = pack_video(item, path, options, device, threads=1)
            outcome = {"status": "done", **info}
        except Exception as error:
            outcome = _failure(error)
        link.send(("done", worker_id, index, outcome))


class _Link:
    """A worker's channels: its inbox queue and its result pipe. The worker exits if the main
    process is gone (the pipe breaks, or the process is re-parented)."""

    def __init__(self, inbox, results):
        self.inbox, self.results, self.parent = inbox, results, os.getppid()

    def receive(self, block: bool = True):
        while True:
            try:
                return self.inbox.get(timeout=5.0) if block else self.inbox.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                if os.getppid() != self.parent:
                    os._exit(0)

    def send(self, message) -> None:
        try:
            self.results.send(message)  # blocks while the main process is behind: back-pressure
        except (BrokenPipeError, EOFError, OSError):
            os._exit(0)


def _pack_with_remote_flow(worker_id, index, item, path, options, link: _Link) -> dict:
    """Worker side of flow-in-the-main-process: send frames, receive quantised flow, write the file."""
    flows_needed = None
    received = 0

    def take_flows(block: bool) -> None:
        nonlocal received
        while flows_needed is None or received < flows_needed:
            try:
                message = link.receive(block=block)
            except queue.Empty:
                return
            if message is None:
                raise KeyboardInterrupt  # the main process is stopping
            kind, message_index, ks, quantized = message
            if kind != "flows" or message_index != index:
                continue  # flow of an earlier, failed video of this worker
            for k, (x, y) in zip(ks, _encode_flow(quantized, options)):
                writer.add_flow(k, x, y)
            received += len(ks)

    with VideoReader(item.path, size=options.size, threads=1) as reader, PackedVideoWriter(path) as writer:
        count = 0
        try:
            for chunk in reader.chunks(options.chunk_frames, options.max_frames):
                for i, blob in enumerate(_encode_rgb(chunk, options.rgb_quality)):
                    writer.add_rgb(count + i, blob)
                link.send(("frames", worker_id, index, count, chunk))
                count += len(chunk)
                take_flows(block=False)
            if count < 2:
                raise VideoDecodeError(item.path, "too_short", f"{count} frame; optical flow needs at least 2")
        finally:
            link.send(("frames_end", worker_id, index, count))
        flows_needed = count - 1
        take_flows(block=True)
        writer.finish(_meta(item, reader, options))
    return {"frames": count, "flows": flows_needed, "bytes": os.path.getsize(path)}


class _Pool:
    """Worker processes, each with its own channels: an inbox queue (main → worker) and a result
    pipe (worker → main). The main process always knows which video each worker holds, and a
    worker that dies (even in the middle of a write) breaks only its own channels: its video is
    reported failed and a new worker takes over."""

    def __init__(self, todo, store, options, device, workers, across):
        self.todo, self.store, self.options, self.device, self.across = list(todo), str(store), options, device, across
        self.size = min(workers, len(self.todo)) or 1
        self.context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
        if hasattr(self.context, "set_forkserver_preload"):
            # Workers fork from a server that has these imported already (torch: seconds each).
            # The third-party ones are listed too: Python 3.11's server ignores sys.path changes,
            # so mateffnet itself only preloads when it is installed.
            self.context.set_forkserver_preload(["numpy", "torch", "torchvision", "av", "mateffnet.data.prepare"])
        self.workers: dict[int, _Worker] = {}
        self.next_id = 0
        self.startup_failures = 0
        self.batcher = _FlowBatcher(self) if across else None

    def results(self):
        from multiprocessing.connection import wait

        pending = list(range(len(self.todo)))[::-1]
        finished = 0
        last_message = time.monotonic()
        try:
            for _ in range(self.size):
                self._start_worker()
            while finished < len(self.todo):
                for worker in list(self.workers.values()):
                    if worker.ready and worker.holding is None and pending:
                        self._assign(worker, pending.pop())
                by_connection = {w.results: w for w in self.workers.values() if not w.closed}
                busy = self.batcher is not None and self.batcher.busy
                ready = wait(list(by_connection), timeout=0.002 if busy else 0.05)
                for connection in ready:
                    worker = by_connection[connection]
                    try:
                        message = connection.recv()
                    except (EOFError, OSError):
                        worker.closed = True  # the worker exited; reaped below
                        continue
                    except Exception:  # a message cut off by the worker's death
                        worker.closed = True
                        worker.process.kill()
                        continue
                    last_message = time.monotonic()
                    outcome = self._handle(worker, message)
                    if outcome is not None:
                        finished += 1
                        yield outcome
                if self.batcher:
                    self.batcher.deliver()
                if not ready and self.batcher and time.monotonic() - last_message > 1.0:
                    self.batcher.flush_all()  # safety net; full batches and end_frames normally decide
                for outcome in self._reap_dead():
                    finished += 1
                    yield outcome
        finally:
            self._stop()

    def _handle(self, worker: "_Worker", message):
        kind, index = message[0], message[2]
        if kind == "ready":
            worker.ready = True
            self.startup_failures = 0
        elif kind == "done":
            worker.holding = None
            if self.batcher:
                self.batcher.forget(index)
            return self.todo[index], message[3]
        elif kind == "frames":
            self.batcher.add_frames(worker.id, index, message[3], message[4])
        elif kind == "frames_end":
            self.batcher.end_frames(index)
        return None

    def _assign(self, worker: "_Worker", index: int) -> None:
        worker.holding = index
        worker.inbox.put(("video", index, self.todo[index]))

    def send(self, worker_id: int, index: int, message) -> None:
        """Send to the worker holding video `index`, if it still does."""
        worker = self.workers.get(worker_id)
        if worker is not None and worker.holding == index:
            worker.inbox.put(message)

    def _start_worker(self) -> None:
        worker_id, self.next_id = self.next_id, self.next_id + 1
        inbox = self.context.Queue()
        inbox.cancel_join_thread()  # never wait at exit on a dead worker's full pipe
        receive_end, send_end = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(worker_id, inbox, send_end, self.store, self.options, self.device, self.across),
            name=f"mateffnet-prepare-{worker_id}",
            daemon=True,
        )
        process.start()
        send_end.close()  # only the worker writes: its death closes the pipe
        self.workers[worker_id] = _Worker(worker_id, process, inbox, receive_end)

    def _reap_dead(self):
        for worker in list(self.workers.values()):
            if worker.process.exitcode is None or (not worker.closed and worker.results.poll()):
                continue  # alive, or messages left to read first
            del self.workers[worker.id]
            worker.results.close()
            worker.inbox.close()
            if not worker.ready:
                self.startup_failures += 1
                if self.startup_failures >= 3:
                    raise MateffnetError(
                        f"prepare worker processes die while starting (exit status {worker.process.exitcode}); "
                        "run with --workers 0 to see why"
                    )
            self._start_worker()
            index = worker.holding
            if index is not None:
                if self.batcher:
                    self.batcher.forget(index)
                _remove_temporaries(store_path(self.store, self.todo[index].video_id))
                code = worker.process.exitcode
                how = f"signal {-code}" if code < 0 else f"exit status {code}"
                detail = f"the worker process decoding it died ({how}); the decoder probably crashed on this file"
                yield self.todo[index], {"status": "failed", "reason": "crashed", "detail": detail}

    def _stop(self) -> None:
        for worker in self.workers.values():
            try:
                worker.inbox.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.results.close()
            worker.inbox.close()


@dataclasses.dataclass(eq=False)
class _Worker:
    id: int
    process: multiprocessing.Process
    inbox: object  # multiprocessing Queue, main → worker
    results: object  # multiprocessing Connection, worker → main
    ready: bool = False
    closed: bool = False
    holding: int | None = None  # index of the video it works on


class _FlowBatcher:
    """Main-process side of flow across videos: frame pairs of several videos, grouped by frame
    size, go to `compute_flow` in batches of `flow_batch`; the quantised flow goes back to each
    video's worker. On a GPU a batch is only queued (`IN_FLIGHT` at most): the main process receives
    the next frames while the GPU computes, and `deliver` hands out the batches that have finished."""

    IN_FLIGHT = 2

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.options = pool.options
        self.buckets: dict[tuple[int, int], list] = {}  # (H, W) → [(index, k, frame k, frame k+1)]
        self.last_frame: dict[int, np.ndarray] = {}
        self.worker_of: dict[int, int] = {}
        self.in_flight: list[tuple[list, object, object]] = []  # (pairs, quantised flow, CUDA event)

    def add_frames(self, worker_id: int, index: int, first: int, frames: np.ndarray) -> None:
        self.worker_of[index] = worker_id
        bucket = self.buckets.setdefault(frames.shape[1:3], [])
        previous = self.last_frame.get(index)
        for j in range(len(frames)):
            if j == 0:
                if previous is not None:
                    bucket.append((index, first - 1, previous, frames[0]))
            else:
                bucket.append((index, first + j - 1, frames[j - 1], frames[j]))
        self.last_frame[index] = frames[-1]
        while len(bucket) >= self.options.flow_batch:
            self._run(bucket, self.options.flow_batch)

    def end_frames(self, index: int) -> None:
        """All frames of video `index` are in: its worker now only waits for flow, so the pairs
        still pending for it go out now, in a partial batch if need be (one per video at most)."""
        self.last_frame.pop(index, None)
        for bucket in self.buckets.values():
            if any(pair[0] == index for pair in bucket):
                while bucket:
                    self._run(bucket, self.options.flow_batch)

    def forget(self, index: int) -> None:
        """Drop a finished or failed video's pending pairs."""
        self.last_frame.pop(index, None)
        self.worker_of.pop(index, None)
        for bucket in self.buckets.values():
            bucket[:] = [pair for pair in bucket if pair[0] != index]

    def flush_all(self) -> None:
        for bucket in self.buckets.values():
            while bucket:
                self._run(bucket, self.options.flow_batch)

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    def deliver(self, wait: bool = False) -> None:
        """Send the flow of every finished batch (in order) to its videos' workers; with `wait`,
        wait for the oldest one first."""
        while self.in_flight:
            pairs, quantized, done = self.in_flight[0]
            if done is not None:
                if wait:
                    done.synchronize()
                elif not done.query():
                    return
            self.in_flight.pop(0)
            self._send(pairs, quantized.numpy())
            wait = False

    def _run(self, bucket: list, count: int) -> None:
        batch, bucket[:] = bucket[:count], bucket[count:]
        rows: dict[tuple[int, int], int] = {}  # (video, frame number) → row: each frame uploaded once
        frames, first, second = [], [], []
        for index, k, frame0, frame1 in batch:
            for key, frame, targets in (((index, k), frame0, first), ((index, k + 1), frame1, second)):
                if key not in rows:
                    rows[key] = len(frames)
                    frames.append(frame)
                targets.append(rows[key])
        quantized, done = _launch_quantized_flow(frames, first, second, self.options, self.pool.device)
        self.in_flight.append(([(index, k) for index, k, _, _ in batch], quantized, done))
        self.deliver(wait=len(self.in_flight) > self.IN_FLIGHT)

    def _send(self, pairs: list[tuple[int, int]], quantized: np.ndarray) -> None:
        by_video: dict[int, list[int]] = {}
        for position, (index, _) in enumerate(pairs):
            by_video.setdefault(index, []).append(position)
        for index, positions in by_video.items():
            worker_id = self.worker_of.get(index)
            if worker_id is not None:  # else the video failed meanwhile
                ks = [pairs[p][1] for p in positions]
                self.pool.send(worker_id, index, ("flows", index, ks, quantized[positions]))
