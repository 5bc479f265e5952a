import pytest
import torch

from mateffnet.data.dataset import VideoDataset
from mateffnet.data.loader import SlotPool, make_loader
from tests.helpers.uniform_store import ITEMS, frame_numbers, write_store, write_uniform_video


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path)


def _epoch(loader, epoch, limit=None):
    loader.set_epoch(epoch)
    out = []
    for step, (clips, labels) in enumerate(loader):
        if limit is not None and step == limit:
            break
        out.append((clips, labels))
    return out


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_make_loader_batches(store, defer, workers):
    items = ITEMS * 3
    dataset = VideoDataset(items, store, "flow", num_segments=2, flow_length=3, input_size=32, defer_decode=defer)
    loader = make_loader(dataset, batch_size=4, workers=workers)
    batches = list(loader)
    assert len(loader) == len(batches) == 1  # 6 videos, batch 4, drop_last when training
    clips, labels = batches[0]
    assert clips.shape == (4, 2, 6, 32, 32) and clips.dtype == torch.uint8
    assert set(labels.tolist()) <= {1, 3}
    test = VideoDataset(items, store, "rgb", num_segments=2, train=False, num_crops=3, input_size=32, defer_decode=defer)
    shapes = [clips.shape for clips, _ in make_loader(test, batch_size=4, workers=workers)]
    assert shapes == [(4, 3, 2, 3, 32, 32), (2, 3, 2, 3, 32, 32)]


@pytest.mark.parametrize("workers", [0, 2])
def test_deferred_lz4_near_flow_batches_equal_the_workers_batches(tmp_path, monkeypatch, workers):
    monkeypatch.setattr("mateffnet.data.dataset.nvcomp_available", lambda: True)  # decode_batch runs on the CPU here
    write_uniform_video(tmp_path, "a/long", 20, flow_codec="lz4-near")
    write_uniform_video(tmp_path, "b/short", 5, flow_codec="lz4-near")
    kwargs = dict(num_segments=2, flow_length=3, input_size=32, seed=3, defer_decode="auto")
    deferred = VideoDataset(ITEMS * 3, tmp_path, "flow", **kwargs)
    by_workers = VideoDataset(ITEMS * 3, tmp_path, "flow", **{**kwargs, "defer_decode": False})
    loaders = [make_loader(d, batch_size=3, workers=workers, shuffle=False) for d in (deferred, by_workers)]
    assert [loader.mode for loader in loaders] == ["deferred", "plain"]
    for loader in loaders:
        loader.set_epoch(1)
    got, expected = list(loaders[0]), list(loaders[1])
    assert len(got) == len(expected) == 2
    for (clips, labels), (want, want_labels) in zip(got, expected):
        assert torch.equal(clips, want) and torch.equal(labels, want_labels)


def test_make_loader_takes_a_sampler(store):
    dataset = VideoDataset(ITEMS * 2, store, "rgb", num_segments=2, input_size=32)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    labels = [label for _, batch in make_loader(dataset, batch_size=2, workers=0, sampler=sampler) for label in batch.tolist()]
    assert labels == [1, 1]  # rank 1 of 2 gets items 1 and 3


@pytest.mark.parametrize("ring", [False, True])
def test_persistent_workers_draw_each_epochs_own_samples(store, ring):
    dataset = VideoDataset([ITEMS[0]] * 4, store, "rgb", num_segments=4, input_size=32, seed=3)
    loader = make_loader(dataset, batch_size=4, workers=2, shuffle=False, ring=ring)
    assert loader.mode == ("ring" if ring else "plain")
    first, second = (_epoch(loader, e)[0][0] for e in (0, 1))
    in_process = VideoDataset([ITEMS[0]] * 4, store, "rgb", num_segments=4, input_size=32, seed=3)
    for epoch, clips in ((0, first), (1, second)):
        in_process.set_epoch(epoch)
        assert torch.equal(clips, torch.stack([in_process[i][0] for i in range(4)]))
    assert [frame_numbers(c) for c in first] != [frame_numbers(c) for c in second]


@pytest.mark.parametrize("modality, size", [("flow", 24), ("flow", 42), ("rgb", 42)])  # 42: crops need no resizing
def test_the_ring_gives_the_plain_loaders_batches_across_epochs_and_early_stops(store, modality, size):
    """Slots are recycled, samples abandoned by a stopped epoch are dropped, a last partial batch is kept."""
    def build(ring):
        dataset = VideoDataset(ITEMS * 7, store, modality, num_segments=3, flow_length=2, input_size=size, seed=1)
        return make_loader(dataset, batch_size=3, workers=2, prefetch=2, shuffle=False, drop_last=False, ring=ring)

    plain, ring = build(False), build(True)
    assert ring.mode == "ring" and len(ring) == len(plain) == 5  # 14 clips: 4 batches of 3 and one of 2
    for epoch, limit in ((0, None), (1, 2), (2, None), (3, None)):
        expected, got = _epoch(plain, epoch, limit), _epoch(ring, epoch, limit)
        assert len(got) == len(expected) == (limit or 5)
        for (clips, labels), (want, want_labels) in zip(got, expected):
            assert torch.equal(clips, want) and torch.equal(labels, want_labels)
    assert ring.ring.shape[0] == 2 * 2 * 2 + 2 * 3  # in flight, abandoned by a stopped epoch, being copied


def test_the_ring_hands_samples_to_workers_in_chunks(store):
    dataset = VideoDataset(ITEMS * 9, store, "rgb", num_segments=2, input_size=42, seed=2)
    ring = make_loader(dataset, batch_size=8, workers=2, shuffle=False, ring=True)
    plain = make_loader(dataset, batch_size=8, workers=2, shuffle=False, ring=False)
    assert ring.loader.batch_size == 2 and ring.ring.shape[0] == 2 * 2 * 2 * 2 + 2 * 8
    for epoch in range(2):
        for (clips, labels), (want, want_labels) in zip(_epoch(ring, epoch), _epoch(plain, epoch), strict=True):
            assert torch.equal(clips, want) and torch.equal(labels, want_labels)


def test_slot_pool_recycles_copied_slots_and_released_ones():
    pool = SlotPool(3)
    taken = [pool.take() for _ in range(3)]
    assert sorted(taken) == [0, 1, 2]
    pool.copied(taken[:2], None)  # copies done at once (CPU)
    again = [pool.take(), pool.take()]
    assert sorted(again) == sorted(taken[:2])
    with pytest.raises(RuntimeError, match="all 3 slots are taken by samples in flight"):
        pool.take()
    pool.release([taken[2], 99])
    assert pool.take() == taken[2]


def test_a_ring_too_big_for_the_budget_falls_back_to_plain_batches(store, monkeypatch):
    monkeypatch.setattr("mateffnet.data.loader.RING_BUDGET", 1024)
    dataset = VideoDataset(ITEMS * 3, store, "flow", num_segments=2, flow_length=3, input_size=32)
    assert make_loader(dataset, batch_size=2, workers=1, ring=True).mode == "plain"


def test_workers_start_after_a_video_decoder_became_garbage(store, tmp_path, video_writer, square_frames):
    """A forked worker that garbage-collects an inherited PyAV decoder would wait for ever on FFmpeg
    threads that fork did not copy; the loader starts its workers with such objects frozen."""
    from mateffnet.io.decode import VideoReader

    path = video_writer(tmp_path / "v.mp4", square_frames(8, 64, 96))
    with VideoReader(path, size=48, threads=0) as reader:  # FFmpeg's own decoding and scaling threads
        next(reader.frames())
        cycle = [reader]
        cycle.append(cycle)  # only the garbage collector can free it
    del reader, cycle
    dataset = VideoDataset(ITEMS * 4, store, "rgb", num_segments=2, input_size=32)
    loader = make_loader(dataset, batch_size=4, workers=2)
    loader.loader.timeout = 60  # a hung worker fails the test instead of hanging the suite
    assert [clips.shape[0] for clips, _ in loader] == [4, 4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_ring_is_pinned_and_gives_the_plain_batches(store):
    dataset = VideoDataset(ITEMS * 6, store, "flow", num_segments=3, flow_length=2, input_size=42, seed=4)
    ring = make_loader(dataset, batch_size=4, device="cuda", workers=2, shuffle=False)
    plain = make_loader(dataset, batch_size=4, device="cuda", workers=2, shuffle=False, ring=False)
    assert ring.mode == "ring" and ring.pinned
    for epoch in range(2):
        for (clips, labels), (want, want_labels) in zip(_epoch(ring, epoch), _epoch(plain, epoch), strict=True):
            assert clips.is_cuda and torch.equal(clips, want) and torch.equal(labels, want_labels)


# ------------------------------------------------------------------------ damaged packed files (issue 18)


def _damage(path, how):
    from mateffnet.io.store import PackedVideo

    data = bytearray(path.read_bytes())
    if how == "footer":
        data[-40:] = bytes(40)
    else:  # bytes flipped in the middle of every stored image
        for offset, length in PackedVideo(path)._index.tolist():
            data[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, problem", [("jpeg", r"RGB frame \d+ is damaged \(checksum mismatch\)"),
                                          ("footer", r"no footer")])
@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_packed_file_stops_the_loader_with_one_line_naming_file_video_and_fix(store, how, problem, workers):
    import gc
    import multiprocessing

    from mateffnet.io.store import StoreError

    _damage(store / "b/short.mfv", how)
    test = VideoDataset(ITEMS, store, "rgb", num_segments=2, train=False, num_crops=1, input_size=32)
    with pytest.raises(StoreError) as error:
        list(make_loader(test, batch_size=1, workers=workers))
    message = str(error.value)
    del error  # its traceback holds the loader (and its workers), as a caught error in the CLI does not
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{store / 'b/short.mfv'}: bad packed video file: ")
    assert __import__("re").search(problem, message)
    assert message.endswith("(video b/short); redo it with mateffnet prepare (the same arguments) and --verify")
    gc.collect()
    for child in multiprocessing.active_children():
        child.join(timeout=10)
    assert not multiprocessing.active_children()  # no worker left running
