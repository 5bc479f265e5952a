"""The offline job behind `mateffnet prepare`: every listed video → one packed file (RGB JPEGs + quantised
flow) in a store.

Each video is decoded once, resized, its optical flow computed, and everything written into
`STORE/<video_id>.mfv` under a temporary name that is renamed when complete. Work is spread over
worker processes, one video at a time each:

- flow on the CPU (`device="cpu"`): each worker does the whole video (decode, flow, JPEG, write);
- flow on a GPU: workers decode, resize and JPEG-encode the RGB frames and send the frames to the
  main process (through each worker's shared memory), which computes flow for large batches of frame
  pairs drawn from several videos at once on the GPU, quantises it there and sends it back to the
  video's worker to be encoded and written. A batch only mixes videos of the same frame size; the GPU
  computes one batch while the main process receives the frames of the next.

A worker that dies (a decoder crash) fails its video only; a replacement is started. Reruns skip
videos whose packed file opens and checks out, redo half-written or damaged ones, and remove
leftover temporary files. Sharding (`shard=(i, n)`, or torchrun's RANK/WORLD_SIZE) splits the
videos between processes/machines writing into the same store.

The run ends with a `PrepareReport` (also written to `STORE/report.json`): videos listed, missing,
done, skipped (already done) and failed, the missing names, and each failure with its reason.

Rooms of this package: `options` (what is asked), `job` (this: the dataset, the rerun checks, the report),
`pack` (one video), `pool` and `worker` (the processes), `processes` (how they start), `messages` (what they
send each other), `shared` (their shared memory), `batcher` (flow across videos on the GPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from mateffnet.errors import MateffnetError
from mateffnet.fileio import (WRITE_ERRNOS, atomic_write_json, environment_errors, os_error_line,
                              remove_stale_temporaries)
from mateffnet.io.annotations import VideoItem, load_annotations, split_missing
from mateffnet.io.store import STORE_SETTINGS, PackedVideo, StoreError, store_path
from mateffnet.prepare.lock import store_lock
from mateffnet.prepare.options import PrepareOptions, check_options, check_shard
from mateffnet.prepare.pack import STORE_NOT_WRITABLE
from mateffnet.prepare.pool import pack_all
from mateffnet.runtime import resolve_device, torchrun_env

EXIT_OK, EXIT_SOME_FAILED, EXIT_STORE_NOT_WRITABLE = 0, 1, 2

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
    stopped: str = ""  # why the run stopped before the end: the store could not be written (disk full, read-only)
    report_path: str = ""
    unwritten: str = ""  # why report_path could not be written (not in the file)

    @property
    def exit_status(self) -> int:
        if self.stopped or self.unwritten:
            return EXIT_STORE_NOT_WRITABLE
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
        if self.stopped:
            lines.append(f"stopped: {self.stopped}; rerun the same command once it is fixed (finished videos are kept)")
        return "\n".join(lines)


def _first_few(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


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
    check_options(options or PrepareOptions())  # before reading the annotations: bad options fail at once
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
    shard = options.shard or (torchrun_env().rank, torchrun_env().world_size)
    check_shard(shard)
    items = items[shard[0] :: shard[1]]
    check_options(options)
    device = _resolve_device(options.device)
    name = "report.json" if shard == (0, 1) else f"report-{shard[0]}-of-{shard[1]}.json"
    report = PrepareReport(
        store=str(store), listed=len(items), shard=list(shard), settings=options.settings(), report_path=str(store / name)
    )
    present, missing = split_missing(items)
    report.missing, report.missing_videos = len(missing), [str(item.path) for item in missing]
    with environment_errors(store):  # not writable, a file in the way, disk full: one line naming the path
        store.mkdir(parents=True, exist_ok=True)
        with store_lock(store, shard):
            _check_store_settings(store, options)
            remove_stale_temporaries(store)  # of killed runs; a live shard process's are left alone
            return _prepare_present(present, store, options, device, report, started, progress)


def _prepare_present(present: list[VideoItem], store: Path, options: PrepareOptions, device: str,
                     report: PrepareReport, started: float, progress: bool) -> PrepareReport:
    """The work of `prepare_videos` once the store is held: check finished files, pack the rest, write the report."""
    todo, redo = [], set()
    checking = tqdm(present, desc="checking finished files", unit="video", disable=not progress or len(present) < 1000)
    for item in checking:
        state = _existing_state(item, store, options)
        if state == "done":
            report.skipped += 1
        else:
            if state == "redo":
                redo.add(item.video_id)
            todo.append(item)

    try:
        results = pack_all(todo, store, options, device, progress)
        for item, outcome in results:
            if outcome.get("reason") == STORE_NOT_WRITABLE:
                report.stopped = outcome["detail"]  # every other video would fail the same way: stop here
                results.close()
                break
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
        try:
            atomic_write_json(report.report_path, {k: v for k, v in dataclasses.asdict(report).items() if k != "unwritten"})
        except OSError as error:
            if error.errno not in WRITE_ERRNOS:
                raise
            report.unwritten = os_error_line(error, report.report_path)  # the summary still gets printed
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


def _check_unique(items: list[VideoItem]) -> None:
    seen: dict[str, Path] = {}
    for item in items:
        if item.video_id in seen:
            raise MateffnetError(
                f"two videos would share the packed file {item.video_id}: {seen[item.video_id]} and {item.path}"
            )
        seen[item.video_id] = item.path


def _resolve_device(device: str) -> str:
    return str(resolve_device(device, torchrun_env().local_rank))
