"""Batches of uint8 clips on the training device: DataLoader workers, epochs, and a pinned ring buffer.

`make_loader` picks one of three paths (all give the same batches):

- ring (CUDA, workers decode): each worker writes its finished clip into a slot of a shared-memory
  ring that this process has registered as pinned (page-locked) memory, and hands over only (slot,
  label); a background thread copies a batch's slots to the GPU asynchronously and recycles each
  slot once its copy is done. The usual path hands every batch over in a fresh shared-memory
  segment that the pin-memory thread copies page by page, which tops out below the flow stream's
  training rate on a fast GPU (BENCHMARKS.md).
- deferred (`VideoDataset(defer_decode=True)`): workers hand over the stored bytes; a background thread
  decodes each batch on the GPU (`decode_batch`: nvJPEG, or nvCOMP for LZ4/zstd flow) one batch ahead of
  training.
- plain: the DataLoader's own batching (CPU runs, and datasets of other kinds).

Each index travels to the workers with the epoch it is drawn in (`SampleKey`): persistent workers
keep their own copy of the dataset, which never sees later `set_epoch` calls.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import math
import os
import queue
import shutil
import threading
import weakref
from collections.abc import Iterator

import torch

from mateffnet.data.dataset import SampleKey, VideoDataset, collate_encoded_clips, decode_batch
from mateffnet.errors import MateffnetError
from mateffnet.runtime import cores_per_process, cpu_cores

log = logging.getLogger("mateffnet")

# The ring takes at most this much shared memory (and at most half of /dev/shm's free space); a
# larger one (e.g. 10-crop test views at 25 segments) falls back to the plain path.
RING_BUDGET = 8 * 2**30
WORKER_NICENESS = 10


class EpochSampler(torch.utils.data.Sampler):
    """Yields `SampleKey(index, epoch, slot)` for each index of `sampler`: the dataset's epoch when
    iteration starts, and a free ring slot when `slots` is given (-1 otherwise)."""

    def __init__(self, sampler, dataset, slots: SlotPool | None = None):
        self.sampler, self.dataset, self.slots = sampler, dataset, slots

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = self.dataset.epoch
        for index in self.sampler:
            yield SampleKey(int(index), epoch, self.slots.take() if self.slots is not None else -1)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class SlotPool:
    """The ring's slots: free, taken by a sample being made, or being copied to the device (until
    the copy's event completes). All calls come from the thread that iterates the DataLoader."""

    def __init__(self, count: int):
        self.free = collections.deque(range(count))
        self.copying: collections.deque = collections.deque()  # (event or None, slots)
        self.taken: set[int] = set()

    def take(self) -> int:
        while self.copying and _done(self.copying[0][0]):
            self.free.extend(self.copying.popleft()[1])
        if not self.free:
            if not self.copying:
                raise RuntimeError(f"loader ring: all {len(self.taken)} slots are taken by samples in flight")
            event, slots = self.copying.popleft()
            event.synchronize()
            self.free.extend(slots)
        slot = self.free.popleft()
        self.taken.add(slot)
        return slot

    def copied(self, slots: list[int], event) -> None:
        """`slots` were consumed; they are free once `event` (None: at once) completes."""
        self.taken.difference_update(slots)
        self.copying.append((event, slots))

    def release(self, slots) -> None:
        """Free slots of samples an earlier iteration asked for but never consumed."""
        for slot in slots:
            if slot in self.taken:
                self.taken.remove(slot)
                self.free.append(slot)


def _done(event) -> bool:
    return event is None or event.query()


class RingWriter(torch.utils.data.Dataset):
    """Worker side of the ring: makes sample `key` and writes it into ring slot `key.slot`."""

    def __init__(self, dataset: VideoDataset, ring: torch.Tensor):
        self.dataset, self.ring = dataset, ring

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> tuple[int, int]:
        _, label = self.dataset.write(key, self.ring[key.slot])
        return key.slot, label


class VideoLoader:
    """Batches of (uint8 clips, int64 labels) on `device`; see `make_loader`. Call `set_epoch(e)`
    before iterating epoch e (it reaches the dataset, the sampler and the workers)."""

    def __init__(self, loader: torch.utils.data.DataLoader, dataset, device: torch.device, batch_size: int,
                 drop_last: bool, background: bool, ring: torch.Tensor | None = None, slots: SlotPool | None = None):
        self.loader, self.dataset, self.device = loader, dataset, device
        self.batch_size, self.drop_last, self.background = batch_size, drop_last, background
        self.ring, self.slots = ring, slots
        self.deferred = getattr(dataset, "defer_decode", False)
        self.pinned, self._workers_started = False, False
        if ring is not None and device.type == "cuda":
            self.pinned = _pin(ring)
            if self.pinned:
                weakref.finalize(self, _unpin, ring)

    @property
    def mode(self) -> str:
        return "ring" if self.ring is not None else "deferred" if self.deferred else "plain"

    def describe(self) -> str:
        """Where the clips are decoded, for the start of training: e.g. "flow as lz4-near, decoded on cuda by nvCOMP
        (6 workers read it)"."""
        workers, flow_codec = self.loader.num_workers, _flow_codec(self.dataset)
        stored = f"flow as {flow_codec}" if flow_codec else "RGB JPEGs"
        if self.deferred:
            decoder = "nvJPEG" if flow_codec in (None, "jpeg") else "nvCOMP"
            return f"{stored}, decoded on {self.device} by {decoder} ({workers} workers read it)"
        where = f"{workers} CPU workers" if workers else "this process"
        return f"{stored}, decoded by {where}{' into a pinned ring' if self.pinned else ''}"

    def __len__(self) -> int:
        if self.ring is None:
            return len(self.loader)
        samples = len(self.loader.sampler)
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def sample_indices(self) -> list[int]:
        """The dataset indices one iteration visits, in order (for an unshuffled sampler)."""
        sampler = self.loader.sampler
        return [int(i) for i in (sampler.sampler if isinstance(sampler, EpochSampler) else sampler)]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.ring is not None:
            batches = self._ring_batches()
        elif self.deferred:
            batches = self._deferred_batches()
        else:
            return self._plain_batches()
        return _background(batches, self.device) if self.background else batches

    def _samples(self) -> Iterator:
        """iter(self.loader); the first call starts the worker processes with every object of this
        process frozen out of the garbage collector (`gc.freeze`): a forked worker that collects an
        inherited PyAV decoder joins FFmpeg threads that fork did not copy, and hangs for ever."""
        if self.loader.num_workers == 0 or self._workers_started:
            return _one_line_errors(iter(self.loader))
        gc.collect()  # here, where FFmpeg's threads exist, rather than never
        gc.freeze()
        try:
            samples = iter(self.loader)
        finally:
            gc.unfreeze()
        self._workers_started = True
        return _one_line_errors(samples)

    def _plain_batches(self):
        for clips, labels in self._samples():
            yield clips.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _deferred_batches(self):
        for batch in self._samples():
            yield decode_batch(batch, self.device), batch.labels.to(self.device, non_blocking=True)

    def _ring_batches(self):
        abandoned = set(self.slots.taken)  # asked for by an earlier iteration that stopped early
        chunks = self._samples()  # persistent workers finish the abandoned samples before this returns
        self.slots.release(abandoned)
        samples = (sample for chunk in chunks for sample in chunk)
        total = len(self.loader.sampler)
        cuda = self.device.type == "cuda"
        for first in range(0, len(self) * self.batch_size, self.batch_size):
            count = min(self.batch_size, total - first)
            clips = torch.empty((count, *self.ring.shape[1:]), dtype=torch.uint8, device=self.device)
            labels, slots = [], []
            for b in range(count):
                slot, label = next(samples)
                clips[b].copy_(self.ring[slot], non_blocking=self.pinned)
                labels.append(label)
                slots.append(slot)
            event = None
            if cuda:
                event = torch.cuda.Event()
                event.record()
            self.slots.copied(slots, event)
            yield clips, torch.tensor(labels, dtype=torch.long).to(self.device, non_blocking=True)


def _one_line_errors(samples: Iterator) -> Iterator:
    """`samples`, but a MateffnetError raised in a worker (a damaged packed file) comes out with its own
    one-line message: torch re-raises a worker's exception with the worker's traceback as its message."""
    try:
        yield from samples
    except MateffnetError as error:
        text = str(error).strip()
        if "\n" not in text:
            raise
        message = text.splitlines()[-1].partition(": ")[2]  # "mateffnet.io.store.StoreError: <message>"
        try:
            clean = type(error)(message)
        except TypeError:
            clean = MateffnetError(message)
        raise clean from None


def _as_list(samples: list) -> list:
    return samples


def _pin(ring: torch.Tensor) -> bool:
    result = torch.cuda.cudart().cudaHostRegister(ring.data_ptr(), ring.numel() * ring.element_size(), 0)
    if int(result) != 0:
        log.warning("could not pin the loader's %.1f GiB ring buffer (CUDA error %d); copies to the GPU will be "
                    "synchronous", ring.numel() / 2**30, int(result))
        return False
    return True


def _unpin(ring: torch.Tensor) -> None:
    with contextlib.suppress(Exception):  # at interpreter exit CUDA may be gone already
        torch.cuda.cudart().cudaHostUnregister(ring.data_ptr())


def make_loader(
    dataset: VideoDataset,
    batch_size: int,
    device: str | torch.device = "cpu",
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
    background: bool = True,
    sampler: torch.utils.data.Sampler | None = None,
    ring: bool | None = None,
) -> VideoLoader:
    """A loader that yields (clips, labels) on `device`.

    Defaults: shuffle and drop_last when the dataset trains; workers = `default_workers()` when
    workers decode, `deferred_workers()` when decoding is deferred to the device; persistent workers, at a lower CPU
    priority (nice +10) than this process, whose one thread launches the GPU work and must not wait
    for a core; prefetching of 2 batches per worker (4 deferred; 4 clips per worker on the ring). `sampler` (e.g. a
    DistributedSampler) replaces shuffling. `ring`: None uses the pinned ring on CUDA when workers
    decode a `VideoDataset`; True on any device (the CPU too: tests); False never. Either way only
    if it fits in `RING_BUDGET`.
    """
    device = torch.device(device)
    deferred = getattr(dataset, "defer_decode", False)  # any map-style dataset of (clip, label) works too
    if workers is None:
        workers = deferred_workers(dataset) if deferred else default_workers()
    train = getattr(dataset, "train", True)
    drop_last = train if drop_last is None else drop_last
    if sampler is None:
        shuffle = train if shuffle is None else shuffle
        sampler = torch.utils.data.RandomSampler(dataset) if shuffle else torch.utils.data.SequentialSampler(dataset)
    keyed = isinstance(dataset, VideoDataset)
    if ring is None:
        ring = device.type == "cuda" and keyed and not deferred and workers > 0
    # Workers get the ring's samples in small tasks, not whole batches: a batch of 192 flow clips is
    # 1.5 GB, and the DataLoader keeps `prefetch` tasks per worker in flight.
    chunk = min(4, max(1, batch_size // 4))
    ring_prefetch = prefetch or 2
    slots_needed = 2 * workers * ring_prefetch * chunk + 2 * batch_size  # in flight, abandoned, being copied
    if ring and not _ring_fits(dataset, slots_needed):
        ring = False
    if ring:
        if workers == 0:
            raise ValueError("the ring buffer needs worker processes (workers >= 1)")
        slots = SlotPool(slots_needed)
        buffer = torch.empty((slots_needed, *dataset.sample_shape), dtype=torch.uint8).share_memory_()
        loader = torch.utils.data.DataLoader(
            RingWriter(dataset, buffer), batch_size=chunk, sampler=EpochSampler(sampler, dataset, slots),
            drop_last=False, collate_fn=_as_list, num_workers=workers, persistent_workers=True,
            prefetch_factor=ring_prefetch, worker_init_fn=_lower_priority,
        )
        return VideoLoader(loader, dataset, device, batch_size, drop_last, background, buffer, slots)
    if prefetch is None:
        prefetch = 4 if deferred else 2
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(sampler, dataset) if keyed else sampler,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate_encoded_clips if deferred else None,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
        worker_init_fn=_lower_priority if workers > 0 else None,
    )
    return VideoLoader(loader, dataset, device, batch_size, drop_last, background and deferred)


def _ring_fits(dataset: VideoDataset, slots: int) -> bool:
    size = slots * math.prod(dataset.sample_shape)
    try:
        shm_free = shutil.disk_usage("/dev/shm").free
    except OSError:
        shm_free = RING_BUDGET * 2
    if size <= min(RING_BUDGET, shm_free // 2):
        return True
    log.info("loader: a ring of %d samples (%.1f GiB) does not fit; using the DataLoader's own batching",
             slots, size / 2**30)
    return False


def default_workers() -> int:
    """Decoding workers: three quarters of this process's share of the cores (the cores over
    torchrun's LOCAL_WORLD_SIZE), less one for the process itself: 11 of 16 cores. More workers fed the
    flow stream slower (BENCHMARKS.md): the training thread, which launches the GPU work, competes with
    them for cores."""
    cores = cores_per_process()
    return max(1, cores - 1 - cores // 4)


def deferred_workers(dataset) -> int:
    """Workers that only read stored bytes for the GPU to decode: 6 for flow of nvCOMP's codecs, 4 for nvJPEG
    (a flow clip of LZ4 or zstd is ~0.5 MB to read and check; nvCOMP decodes faster than 4 of them read)."""
    return min(4 if _flow_codec(dataset) in (None, "jpeg") else 6, cpu_cores())


def _flow_codec(dataset) -> str | None:
    """How a dataset's flow is stored; None for RGB (or a dataset of another kind)."""
    return getattr(dataset, "flow_codec", "jpeg") if getattr(dataset, "modality", None) == "flow" else None


def _lower_priority(worker_id: int) -> None:
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)


_END = object()


def _background(batches: Iterator, device: torch.device, depth: int = 2) -> Iterator:
    """Run `batches` (copying or decoding onto `device`) in a thread, `depth` batches ahead. On CUDA
    the thread works on its own stream; each batch is handed over with an event the consumer waits on."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cuda = device.type == "cuda"

    def put(item) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        stream = torch.cuda.Stream(device) if cuda else None
        try:
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                for clips, labels in batches:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not put((clips, labels, event)):
                        return
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
            return
        put(_END)

    thread = threading.Thread(target=produce, name="mateffnet-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            clips, labels, event = item
            if event is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                clips.record_stream(current)
                labels.record_stream(current)
            yield clips, labels
    finally:
        stop.set()
        thread.join(timeout=5)
