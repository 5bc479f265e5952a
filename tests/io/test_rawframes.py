import shutil

import pytest
import torch

from mateffnet.io.decode import read_video
from mateffnet.io.jpeg import decode_jpegs
from mateffnet.io.rawframes import RawFrames, pack_rawframes
from mateffnet.io.store import PackedVideo
from mateffnet.errors import MateffnetError


@pytest.fixture(scope="session")
def tsn_folder(shared_data):
    return shared_data / "rawframes/v_ApplyEyeMakeup_g01_c01"


def test_reads_the_real_tsn_folder(tsn_folder, shared_data):
    frames = RawFrames(tsn_folder)
    assert (frames.base, frames.num_frames, frames.num_flows) == (1, 10, 5)
    assert (frames.width, frames.height, frames.flow_bound) == (320, 240, 20.0)
    rgb = frames.read_rgb([0, 9])
    assert rgb.shape == (2, 3, 240, 320)
    with open(tsn_folder / "img_00010.jpg", "rb") as f:
        expected = decode_jpegs([torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)], gray=False)[0]
    assert torch.equal(rgb[1], expected)  # frame 9 (0-based) is img_00010.jpg
    # img_00001.jpg is frame 0 of the clip: close to decoded frame 0, far from frame 2 onwards
    video, _ = read_video(shared_data / "videos/ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", indices=[0, 2])
    video = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    assert (rgb[0].float() - video[0]).abs().mean() < 1.5
    assert (rgb[0].float() - video[1]).abs().mean() > 3.0
    flow = frames.read_flow([0, 4])
    assert flow.shape == (2, 2, 240, 320) and flow.dtype == torch.uint8
    with open(tsn_folder / "y_00005.jpg", "rb") as f:
        y4 = decode_jpegs([torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)], gray=True)[0, 0]
    assert torch.equal(flow[1, 1], y4)  # flow 4, y channel
    assert abs(flow.float().mean().item() - 128) < 10  # TSN quantisation: 128 = no motion
    with pytest.raises(IndexError, match="flow 5 out of range"):
        frames.read_flow([5])


def test_zero_based_mmaction2_names(tsn_folder, tmp_path):
    for n in range(1, 6):
        shutil.copy(tsn_folder / f"img_{n:05d}.jpg", tmp_path / f"img_{n - 1:05d}.jpg")
    for n in range(1, 5):
        shutil.copy(tsn_folder / f"x_{n:05d}.jpg", tmp_path / f"flow_x_{n - 1:05d}.jpg")
        shutil.copy(tsn_folder / f"y_{n:05d}.jpg", tmp_path / f"flow_y_{n - 1:05d}.jpg")
    zero, one = RawFrames(tmp_path), RawFrames(tsn_folder)
    assert (zero.base, zero.num_frames, zero.num_flows) == (0, 5, 4)
    assert torch.equal(zero.read_rgb([3]), one.read_rgb([3]))
    assert torch.equal(zero.read_flow([2]), one.read_flow([2]))


def test_gaps_and_mismatches_are_errors(tsn_folder, tmp_path):
    for n in (1, 2, 4):
        shutil.copy(tsn_folder / f"img_{n:05d}.jpg", tmp_path / f"img_{n:05d}.jpg")
    with pytest.raises(MateffnetError, match=r"img_ files are not numbered 1..3 \(3 missing\)"):
        RawFrames(tmp_path)
    with pytest.raises(MateffnetError, match="not a rawframes folder"):
        RawFrames(tmp_path / "..")
    with pytest.raises(MateffnetError, match="no such rawframes folder"):
        RawFrames(tmp_path / "absent")


def test_pack_rawframes_copies_the_bytes(tsn_folder, tmp_path):
    meta = pack_rawframes(tsn_folder, tmp_path / "v.mfv")
    packed, raw = PackedVideo(tmp_path / "v.mfv"), RawFrames(tsn_folder)
    assert meta["num_frames"] == 10 and packed.num_flows == 5 and packed.flow_bound == 20.0
    assert (packed.width, packed.height) == (320, 240)
    for k in range(5):
        assert [bytes(t.numpy()) for t in packed.flow_blobs([k])] == [bytes(t.numpy()) for t in raw.flow_blobs([k])]
    assert torch.equal(packed.read_rgb(range(10)), raw.read_rgb(range(10)))
