import logging
from pathlib import Path

import pytest
import torch

from mateffnet.data.annotations import VideoItem
from mateffnet.data.dataset import VideoDataset, collate_jpeg_clips, decode_batch, make_loader
from mateffnet.data.jpeg import encode_jpegs
from mateffnet.data.store import PackedVideoWriter, store_path
from mateffnet.errors import MateffnetError

H, W = 48, 64


def _rgb_value(i):
    return 10 + 10 * i


def _flow_values(k):
    return 50 + 5 * k, 200 - 5 * k


def _write(store, video_id, frames):
    """A packed video whose frame i is uniformly _rgb_value(i) and flow k is uniformly _flow_values(k)."""
    rgb = torch.stack([torch.full((3, H, W), _rgb_value(i), dtype=torch.uint8) for i in range(frames)])
    flow = torch.stack([torch.tensor(_flow_values(k), dtype=torch.uint8).view(2, 1, 1).expand(2, H, W) for k in range(frames - 1)])
    flow_jpegs = encode_jpegs(flow.reshape(-1, 1, H, W), 95)
    with PackedVideoWriter(store_path(store, video_id)) as writer:
        for i, blob in enumerate(encode_jpegs(rgb, 95)):
            writer.add_rgb(i, blob)
        for k in range(frames - 1):
            writer.add_flow(k, flow_jpegs[2 * k], flow_jpegs[2 * k + 1])
        writer.finish({"width": W, "height": H, "flow": {"method": "test", "bound": 20.0}})


@pytest.fixture
def store(tmp_path):
    _write(tmp_path, "a/long", 20)
    _write(tmp_path, "b/short", 5)
    return tmp_path


ITEMS = [VideoItem("a/long", Path("a/long.avi"), 3), VideoItem("b/short", Path("b/short.avi"), 1)]


def _frame_numbers(clip):
    """Frame index of each RGB segment, read back from the uniform pixel values."""
    return [round((v - 10) / 10) for v in clip.float().mean(dim=(1, 2, 3)).tolist()]


def test_rgb_training_clips(store):
    torch.manual_seed(0)
    dataset = VideoDataset(ITEMS, store, "rgb", num_segments=4, input_size=32)
    clip, label = dataset[0]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8 and label == 3
    frames = _frame_numbers(clip)
    assert all(5 * t <= f < 5 * (t + 1) for t, f in enumerate(frames))  # one frame per segment of 20
    short, label = dataset[1]
    assert label == 1 and _frame_numbers(short) == sorted(_frame_numbers(short))


def test_training_samples_are_a_function_of_seed_epoch_and_index(store):
    dataset = VideoDataset(ITEMS, store, "flow", num_segments=3, flow_length=4, input_size=32, seed=7)
    again = VideoDataset(ITEMS, store, "flow", num_segments=3, flow_length=4, input_size=32, seed=7)
    torch.manual_seed(0)
    first = dataset[0][0]
    torch.manual_seed(123)  # the global generator (different in every DataLoader worker) plays no part
    assert torch.equal(again[0][0], first)
    changed = []
    for epoch in range(1, 6):
        dataset.set_epoch(epoch)
        changed.append(not torch.equal(dataset[0][0], first))
    assert any(changed)


def test_flow_training_clips_are_consecutive_stacks(store):
    torch.manual_seed(1)
    dataset = VideoDataset(ITEMS, store, "flow", num_segments=3, flow_length=4, input_size=32)
    assert dataset.channels == 8
    seen_flip = set()
    for epoch in range(10):
        dataset.set_epoch(epoch)
        clip, _ = dataset[0]
        assert clip.shape == (3, 8, 32, 32)
        means = clip.float().mean(dim=(2, 3))  # (T, 2L)
        y = means[:, 1::2]
        ks = ((200 - y) / 5).round()
        assert torch.all(ks[:, 1:] - ks[:, :-1] == 1)  # flows k, k+1, k+2, k+3
        assert ks.min() >= 0 and ks.max() <= 18  # 19 flows for 20 frames
        x = means[:, 0::2]
        plain = torch.tensor([[_flow_values(int(k))[0] for k in row] for row in ks], dtype=torch.float32)
        flipped = torch.allclose(x, 255 - plain, atol=1.5)
        assert flipped or torch.allclose(x, plain, atol=1.5)
        seen_flip.add(flipped)
    assert seen_flip == {True, False}  # flips happen, and negate x when they do
    short, _ = VideoDataset(ITEMS, store, "flow", num_segments=8, flow_length=10, input_size=32)[1]
    assert short.shape == (8, 20, 32, 32)  # 4 flows padded to stacks of 10


def test_test_views_ten_crops(store):
    dataset = VideoDataset(ITEMS, store, "flow", num_segments=5, flow_length=2, train=False, num_crops=10, input_size=32)
    views, label = dataset[0]
    assert views.shape == (10, 5, 4, 32, 32) and label == 3
    assert torch.equal(views[5:, :, 0::2], 255 - views[:5, :, 0::2].flip(-1))
    assert torch.equal(views[5:, :, 1::2], views[:5, :, 1::2].flip(-1))
    again, _ = dataset[0]
    assert torch.equal(views, again)  # test sampling is deterministic


@pytest.mark.parametrize("modality, train", [("rgb", True), ("flow", True), ("flow", False)])
def test_deferred_decoding_gives_the_same_samples(store, modality, train):
    kwargs = dict(num_segments=3, flow_length=3, input_size=40, train=train, num_crops=3, train_crop="multiscale")
    eager = VideoDataset(ITEMS, store, modality, **kwargs)
    deferred = VideoDataset(ITEMS, store, modality, defer_decode=True, **kwargs)
    for seed in range(4):
        torch.manual_seed(seed)
        expected = [eager[i] for i in range(2)]
        torch.manual_seed(seed)
        batch = collate_jpeg_clips([deferred[i] for i in range(2)])
        clips = decode_batch(batch, "cpu")
        assert torch.equal(clips, torch.stack([e[0] for e in expected]))
        assert batch.labels.tolist() == [3, 1]


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


def test_missing_videos_are_summarised_and_left_out(store, caplog):
    items = ITEMS + [VideoItem(f"c/gone{i}", Path(f"c/gone{i}.avi"), 0) for i in range(7)]
    with caplog.at_level(logging.WARNING, logger="mateffnet"):
        dataset = VideoDataset(items, store, "rgb")
    assert len(dataset) == 2 and len(dataset.missing) == 7
    (record,) = caplog.records
    assert "7 of 9 listed videos are missing" in record.message and "gone0.avi" in record.message


def test_unlabelled_videos_cannot_train(store):
    with pytest.raises(MateffnetError, match="a/long has no label"):
        VideoDataset([VideoItem("a/long", Path("x"), -1)], store, "rgb")
    assert len(VideoDataset([VideoItem("a/long", Path("x"), -1)], store, "rgb", train=False)) == 1


def test_reads_tsn_rawframes_folders(shared_data):
    root = shared_data / "rawframes"
    item = VideoItem("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", Path("unused"), 0)  # flat mmaction2 layout
    rgb, _ = VideoDataset([item], root, "rgb", num_segments=3, input_size=112)[0]
    flow, _ = VideoDataset([item], root, "flow", num_segments=3, flow_length=10, input_size=112)[0]
    assert rgb.shape == (3, 3, 112, 112) and flow.shape == (3, 20, 112, 112)


def test_make_loader_takes_a_sampler(store):
    dataset = VideoDataset(ITEMS * 2, store, "rgb", num_segments=2, input_size=32)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    labels = [label for _, batch in make_loader(dataset, batch_size=2, workers=0, sampler=sampler) for label in batch.tolist()]
    assert labels == [1, 1]  # rank 1 of 2 gets items 1 and 3
