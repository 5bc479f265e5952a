import pytest
import torch

from mateffnet.io.jpeg import as_tensor, decode_jpeg_list, decode_jpegs, encode_jpegs
from mateffnet.errors import MateffnetError


def _images(n, channels, h=24, w=40):
    ramp = torch.linspace(0, 255, w).round().to(torch.uint8)
    return ramp.view(1, 1, 1, w).expand(n, channels, h, w).contiguous()


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip(channels):
    images = _images(3, channels)
    blobs = encode_jpegs(images, 95)
    assert len(blobs) == 3 and all(isinstance(b, bytes) and b[:2] == b"\xff\xd8" for b in blobs)
    back = decode_jpegs([as_tensor(b) for b in blobs], gray=channels == 1)
    assert back.shape == images.shape
    assert (back.float() - images.float()).abs().max() <= 4


def test_encoding_leaves_the_thread_setting_alone():
    threads = torch.get_num_threads()
    encode_jpegs(_images(2, 3), 90)
    assert torch.get_num_threads() == threads


def test_bad_input_and_damaged_bytes():
    with pytest.raises(ValueError, match="expected uint8"):
        encode_jpegs(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), 90)
    blob = encode_jpegs(_images(1, 1), 95)[0]
    with pytest.raises(MateffnetError, match="cannot decode a stored JPEG image"):
        decode_jpegs([as_tensor(blob[: len(blob) // 3])], gray=True)
    small, large = encode_jpegs(_images(1, 1, 8, 8), 95)[0], encode_jpegs(_images(1, 1, 16, 8), 95)[0]
    assert [t.shape for t in decode_jpeg_list([as_tensor(small), as_tensor(large)], gray=True)] == [(1, 8, 8), (1, 16, 8)]
    with pytest.raises(MateffnetError, match="differ in size"):
        decode_jpegs([as_tensor(small), as_tensor(large)], gray=True)
