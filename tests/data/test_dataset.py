import logging
from pathlib import Path

import pytest
import torch

from mateffnet.io.annotations import VideoItem
from mateffnet.data.dataset import VideoDataset, collate_encoded_clips, decode_batch
from mateffnet.data.loader import deferred_workers, make_loader
from mateffnet.errors import MateffnetError
from tests.helpers.uniform_store import ITEMS, flow_values, frame_numbers, write_store, write_uniform_video


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path)

def test_rgb_training_clips(store):
    torch.manual_seed(0)
    dataset = VideoDataset(ITEMS, store, "rgb", num_segments=4, input_size=32)
    clip, label = dataset[0]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8 and label == 3
    frames = frame_numbers(clip)
    assert all(5 * t <= f < 5 * (t + 1) for t, f in enumerate(frames))  # one frame per segment of 20
    short, label = dataset[1]
    assert label == 1 and frame_numbers(short) == sorted(frame_numbers(short))


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
        plain = torch.tensor([[flow_values(int(k))[0] for k in row] for row in ks], dtype=torch.float32)
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
        batch = collate_encoded_clips([deferred[i] for i in range(2)])
        clips = decode_batch(batch, "cpu")
        assert torch.equal(clips, torch.stack([e[0] for e in expected]))
        assert batch.labels.tolist() == [3, 1]


@pytest.mark.parametrize("codec", ["lz4", "lz4-near", "zstd-near"])
@pytest.mark.parametrize("train", [True, False])
def test_flow_of_the_fast_codecs_deferred_to_nvcomp_gives_the_workers_clips(tmp_path, monkeypatch, codec, train):
    monkeypatch.setattr("mateffnet.data.dataset.nvcomp_available", lambda: True)
    fast = tmp_path / codec
    write_uniform_video(fast, "a/long", 20, flow_codec=codec)
    write_uniform_video(fast, "b/short", 5, flow_codec=codec)
    kwargs = dict(num_segments=3, flow_length=3, input_size=40, train=train, num_crops=3, train_crop="multiscale",
                  seed=5)
    eager = VideoDataset(ITEMS, fast, "flow", **kwargs)
    deferred = VideoDataset(ITEMS, fast, "flow", defer_decode=True, **kwargs)
    assert deferred.defer_decode
    batch = collate_encoded_clips([deferred[i] for i in range(2)])
    assert batch.codec == codec
    assert torch.equal(decode_batch(batch, "cpu"), torch.stack([eager[i][0] for i in range(2)]))


def test_flow_of_the_fast_codecs_is_decoded_by_the_workers_without_nvcomp(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("mateffnet.data.dataset.nvcomp_available", lambda: False)
    write_uniform_video(tmp_path, "a/long", 20, flow_codec="lz4-near")
    with caplog.at_level(logging.INFO, logger="mateffnet"):
        dataset = VideoDataset(ITEMS[:1], tmp_path, "flow", defer_decode=True)
    assert not dataset.defer_decode
    assert "decoded by the loader workers (GPU decoding needs nvCOMP: pip install nvidia-libnvcomp" in caplog.text


@pytest.mark.parametrize("codec, modality, installed, deferred", [
    ("lz4-near", "flow", True, True), ("zstd-near", "flow", True, True), ("jpeg", "flow", True, False),
    ("lz4-near", "rgb", True, False), ("lz4-near", "flow", False, False),
])
def test_auto_defers_only_flow_of_nvcomp_codecs_where_nvcomp_is_installed(tmp_path, monkeypatch, codec, modality,
                                                                          installed, deferred):
    monkeypatch.setattr("mateffnet.data.dataset.nvcomp_available", lambda: installed)
    write_uniform_video(tmp_path, "a/long", 20, flow_codec=codec)
    dataset = VideoDataset(ITEMS[:1], tmp_path, modality, defer_decode="auto")
    assert dataset.defer_decode is deferred
    loader = make_loader(dataset, 2, workers=0)
    assert loader.mode == ("deferred" if deferred else "plain")
    stored = f"flow as {codec}" if modality == "flow" else "RGB JPEGs"
    assert loader.describe() == (f"{stored}, decoded on cpu by nvCOMP (0 workers read it)" if deferred
                                 else f"{stored}, decoded by this process")
    monkeypatch.setattr("mateffnet.data.loader.cpu_cores", lambda: 16)
    assert deferred_workers(dataset) == (6 if modality == "flow" and codec != "jpeg" else 4)  # nvCOMP / nvJPEG


def test_a_store_of_two_flow_codecs_is_refused_when_decoding_on_the_gpu(store):
    mixed = VideoDataset(ITEMS, store, "flow", defer_decode=True, num_segments=3, flow_length=3, input_size=40)
    write_uniform_video(store, "b/short", 5, flow_codec="lz4")
    with pytest.raises(MateffnetError, match=r"short\.mfv: flow stored as lz4, not jpeg, in a store of jpeg flow"):
        mixed[1]


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
