import os
import re

import pytest
import torch

from mateffnet.io.flowcodec import FLOW_CODECS, encode_flow_planes
from mateffnet.io.jpeg import decode_jpegs, encode_jpegs
from mateffnet.io.store import PackedVideo, PackedVideoWriter, StoreError, store_path
from mateffnet.errors import MateffnetError
from mateffnet.flow import dequantize_flow, quantize_flow


def _smooth(shape, seed):
    """Smooth random images in [0, 1] (like natural frames and flow fields, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(*shape[:-2], shape[-2] // 8 + 1, shape[-1] // 8 + 1, generator=g)
    fine = torch.nn.functional.interpolate(coarse.flatten(0, -3)[:, None], size=shape[-2:], mode="bicubic")
    return fine[:, 0].view(shape).clamp(0, 1)


def _write_sample(path, n=6, h=40, w=56, bound=20.0, flow_codec="jpeg"):
    luma = _smooth((n, 1, h, w), 0) * 200
    tint = torch.tensor([30.0, 10.0, -20.0]).view(1, 3, 1, 1)  # a colour cast, distinct per channel
    rgb = (luma + 25 + tint).clamp(0, 255).to(torch.uint8)
    flow = (_smooth((n - 1, 2, h, w), 1) - 0.5) * 30  # about ±10 px
    q = quantize_flow(flow, bound)
    rgb_jpegs = encode_jpegs(rgb, 90)
    flow_jpegs = encode_flow_planes(q.reshape(-1, h, w), flow_codec, 95)
    with PackedVideoWriter(path) as writer:
        for k in reversed(range(n - 1)):  # any order
            writer.add_flow(k, flow_jpegs[2 * k], flow_jpegs[2 * k + 1])
        for i in range(n):
            writer.add_rgb(i, rgb_jpegs[i])
        codec = {} if flow_codec == "jpeg" else {"codec": flow_codec}  # files without the key are JPEG
        writer.finish({"width": w, "height": h, "fps": 25.0, "flow": {"method": "test", "bound": bound, **codec}})
    return rgb, flow, rgb_jpegs, flow_jpegs


def test_round_trip_of_frames_and_flow(tmp_path):
    path = store_path(tmp_path, "cls/video_a")
    assert path == tmp_path / "cls" / "video_a.mfv"
    rgb, flow, rgb_jpegs, flow_jpegs = _write_sample(path)
    video = PackedVideo(path)
    assert (video.num_frames, video.num_flows, video.width, video.height) == (6, 5, 56, 40)
    assert video.fps == 25.0 and video.flow_bound == 20.0 and video.meta["version"] == 1
    # the stored bytes are exactly what was written, in the requested order
    assert [bytes(t.numpy()) for t in video.rgb_jpegs([3, 0, 3])] == [rgb_jpegs[3], rgb_jpegs[0], rgb_jpegs[3]]
    assert [bytes(t.numpy()) for t in video.flow_blobs([2])] == flow_jpegs[4:6]
    frames = video.read_rgb(range(6))
    assert frames.shape == (6, 3, 40, 56) and frames.dtype == torch.uint8
    assert (frames.float() - rgb.float()).abs().mean() < 2.0  # JPEG error only
    stored = video.read_flow([0, 1, 2, 3, 4])
    assert stored.shape == (5, 2, 40, 56)
    back = dequantize_flow(stored, video.flow_bound)
    # quantisation step is 40/255 px; JPEG at quality 95 adds a little on smooth fields
    assert (back - flow).abs().mean() < 0.2
    assert (back[:, 0] - flow[:, 0]).abs().mean() < (back[:, 0] - flow[:, 1]).abs().mean()  # x is x
    video.verify(deep=True)


def test_lz4_flow_reads_back_exactly(tmp_path):
    path = tmp_path / "v.mfv"
    _, flow, _, blobs = _write_sample(path, flow_codec="lz4")
    video = PackedVideo(path)
    assert video.flow_codec == "lz4"
    assert [bytes(t.numpy()) for t in video.flow_blobs([1])] == blobs[2:4]
    assert torch.equal(video.read_flow(range(5)), quantize_flow(flow, 20.0))
    _write_sample(tmp_path / "j.mfv")  # written without a codec key, as files before LZ4 existed
    assert PackedVideo(tmp_path / "j.mfv").flow_codec == "jpeg"


@pytest.mark.parametrize("codec", FLOW_CODECS)
def test_a_store_of_every_flow_codec_reads_back_within_its_error(tmp_path, codec):
    """JPEG and LZ4 stores written before zstd existed keep reading beside the new ones."""
    path = tmp_path / "v.mfv"
    _, flow, _, _ = _write_sample(path, flow_codec=codec)
    video = PackedVideo(path)
    assert video.flow_codec == codec
    stored, exact = video.read_flow(range(5)), quantize_flow(flow, 20.0)
    error = (stored.int() - exact.int()).abs()
    assert error.max() <= {"zstd": 0, "lz4": 0, "zstd-near": 1, "lz4-near": 1, "jpeg": 8}[codec]
    crop = video.read_flow([3, 1], region=(4, 6, 20, 30), mirror=True)
    assert torch.equal(crop, stored[[3, 1], :, 4:24, 6:36].flip(-1))


def test_damaged_flow_bytes_get_an_error_naming_the_file(tmp_path):
    path = tmp_path / "v.mfv"
    _write_sample(path, flow_codec="zstd-near")
    video = PackedVideo(path)
    offset = int(video._index[video.num_frames + 2, 0])  # flow 1's x plane
    data = bytearray(path.read_bytes())
    data[offset : offset + 8] = b"\xff" * 8  # its zstd frame header
    path.write_bytes(bytes(data))
    damaged = PackedVideo(path)  # the index is intact: opening still works
    with pytest.raises(StoreError, match=r"v\.mfv: bad packed video file: flow 1 \(x\) is damaged \(checksum mismatch\)$"):
        damaged.read_flow([1])
    damaged._image_crcs = None  # as a file written before images carried checksums: the codec finds the damage
    with pytest.raises(StoreError, match=r"v\.mfv: bad packed video file: cannot decode a stored zstd-near flow plane of 56x40"):
        damaged.read_flow([1])
    assert damaged.read_flow([0]).shape == (1, 2, 40, 56)  # the other flows still read
    with pytest.raises(StoreError, match="checksum of the images does not match"):
        damaged.verify(deep=True)


def test_a_flow_codec_this_version_cannot_read_is_named(tmp_path):
    path = tmp_path / "v.mfv"
    with PackedVideoWriter(path) as writer:
        writer.add_rgb(0, encode_jpegs(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 90)[0])
        writer.add_rgb(1, encode_jpegs(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 90)[0])
        writer.add_flow(0, b"x", b"y")
        writer.finish({"width": 8, "height": 8, "flow": {"method": "test", "bound": 20.0, "codec": "webp"}})
    with pytest.raises(StoreError, match=r"v\.mfv: bad packed video file: flow codec 'webp' is not one this mateffnet reads"):
        PackedVideo(path)


def test_index_errors_name_the_file(tmp_path):
    path = tmp_path / "v.mfv"
    _write_sample(path)
    video = PackedVideo(path)
    with pytest.raises(IndexError, match="v.mfv: flow 5 out of range"):
        video.flow_blobs([5])
    with pytest.raises(IndexError, match="frame -1 out of range"):
        video.rgb_jpegs([-1])


def test_truncated_and_damaged_files_are_rejected(tmp_path):
    path = tmp_path / "v.mfv"
    _write_sample(path)
    data = path.read_bytes()
    for cut in (1, 40, len(data) // 2, len(data) - 8):
        (tmp_path / "cut.mfv").write_bytes(data[:cut])
        with pytest.raises(StoreError, match="cut.mfv: bad packed video file"):
            PackedVideo(tmp_path / "cut.mfv")
    damaged = bytearray(data)
    damaged[-FOOTER_SIZE - 3] ^= 0xFF  # inside the index
    (tmp_path / "index.mfv").write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match="checksum of the index"):
        PackedVideo(tmp_path / "index.mfv")
    damaged = bytearray(data)
    damaged[100] ^= 0xFF  # inside the first JPEG
    (tmp_path / "payload.mfv").write_bytes(bytes(damaged))
    video = PackedVideo(tmp_path / "payload.mfv")  # structure is fine
    with pytest.raises(StoreError, match="checksum of the images"):
        video.verify(deep=True)
    (tmp_path / "other.mfv").write_bytes(b"RIFF" + data[4:])
    with pytest.raises(StoreError, match="wrong magic"):
        PackedVideo(tmp_path / "other.mfv")
    with pytest.raises(StoreError, match="no such file"):
        PackedVideo(tmp_path / "absent.mfv")


FOOTER_SIZE = 40


def test_unfinished_writer_leaves_nothing(tmp_path):
    path = tmp_path / "v.mfv"
    with pytest.raises(RuntimeError, match="decoder died"):
        with PackedVideoWriter(path) as writer:
            writer.add_rgb(0, b"\xff\xd8 not really")
            raise RuntimeError("decoder died")
    assert os.listdir(tmp_path) == []
    with PackedVideoWriter(path) as writer:
        writer.add_rgb(0, b"a")
        writer.add_rgb(2, b"c")
        with pytest.raises(ValueError, match=r"RGB frame \[1\] missing"):
            writer.finish({"width": 1, "height": 1})
    assert os.listdir(tmp_path) == []


def test_rgb_only_video(tmp_path):
    path = tmp_path / "rgb.mfv"
    frames = torch.full((3, 3, 16, 16), 77, dtype=torch.uint8)
    with PackedVideoWriter(path) as writer:
        for i, blob in enumerate(encode_jpegs(frames, 95)):
            writer.add_rgb(i, blob)
        writer.finish({"width": 16, "height": 16, "flow": None})
    video = PackedVideo(path)
    assert video.num_flows == 0 and video.flow_bound is None
    assert torch.equal(video.read_rgb([1]), decode_jpegs([torch.frombuffer(bytearray(encode_jpegs(frames[:1], 95)[0]), dtype=torch.uint8)], gray=False))


@pytest.mark.parametrize("video_id", ["../evil", "a/../../b", "/etc/passwd", "", "a//b", "./a", ".."])
def test_store_path_refuses_ids_that_would_leave_the_store(tmp_path, video_id):
    with pytest.raises(MateffnetError, match=f"video id '{re.escape(video_id)}' would put its packed file outside the store"):
        store_path(tmp_path, video_id)


def test_store_path_of_a_nested_id_is_inside_the_store(tmp_path):
    assert store_path(tmp_path, "cls/v_x_g01_c01") == tmp_path / "cls/v_x_g01_c01.mfv"


# ------------------------------------------------------------------------ damaged files (issue 18)


def _flip_inside_image(path, row, count=8):
    video = PackedVideo(path)
    offset, length = (int(v) for v in video._index[row])
    data = bytearray(path.read_bytes())
    start = offset + length // 2
    data[start : start + count] = bytes(b ^ 0x5A for b in data[start : start + count])
    path.write_bytes(bytes(data))


def test_every_image_carries_a_checksum_and_a_flipped_byte_is_named_on_read(tmp_path):
    path = tmp_path / "v.mfv"
    _write_sample(path)
    video = PackedVideo(path)
    assert len(video.meta["image_crc32"]) == video.num_frames + 2 * video.num_flows
    _flip_inside_image(path, 2)
    video = PackedVideo(path)  # the structure is intact: opening still works
    video.read_rgb([0, 1])  # undamaged images still read
    with pytest.raises(StoreError, match=rf"{path}: bad packed video file: RGB frame 2 is damaged \(checksum mismatch\)"):
        video.read_rgb([1, 2])
    _flip_inside_image(path, video.num_frames + 1)
    with pytest.raises(StoreError, match=r"flow 0 \(y\) is damaged"):
        PackedVideo(path).read_flow([0])
    with pytest.raises(StoreError, match="checksum of the images does not match"):
        PackedVideo(path).verify(deep=True)


def test_a_file_written_before_image_checksums_still_reads(tmp_path):
    import json
    import struct
    import zlib

    path = tmp_path / "old.mfv"
    _write_sample(path)
    video = PackedVideo(path)
    expected = video.read_rgb(range(video.num_frames))
    # rewrite meta without image_crc32, as the format was before
    data = path.read_bytes()
    footer = data[-40:]
    meta_offset, meta_length, count, _, payload_crc, end = struct.unpack("<QQQII8s", footer)
    meta = json.loads(data[meta_offset : meta_offset + meta_length])
    del meta["image_crc32"]
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    index = data[meta_offset + meta_length : -40]
    footer = struct.pack("<QQQII8s", meta_offset, len(meta_bytes), count, zlib.crc32(index, zlib.crc32(meta_bytes)),
                         payload_crc, end)
    path.write_bytes(data[:meta_offset] + meta_bytes + index + footer)
    old = PackedVideo(path)
    assert "image_crc32" not in old.meta
    assert torch.equal(old.read_rgb(range(old.num_frames)), expected)
