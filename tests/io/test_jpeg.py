import pytest
import torch
import torchvision.io

from mateffnet.io.jpeg import as_tensor, decode_jpeg_list, decode_jpegs, encode_jpegs, jpeg_codec
from mateffnet.errors import MateffnetError


@pytest.fixture(params=["torchvision", "pillow"])
def codec(request, monkeypatch):
    """Each test twice: with torchvision's JPEG codecs, and on a torchvision that no longer has them."""
    if request.param == "pillow":
        monkeypatch.delattr(torchvision.io, "decode_jpeg")
        monkeypatch.delattr(torchvision.io, "encode_jpeg")
    assert jpeg_codec("cpu") == request.param
    return request.param


def _texture(n, channels, h=48, w=64, seed=0):
    """Smooth random images with edges: what frames and flow planes look like to a JPEG codec."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, channels, h // 4, w // 4, generator=g) * 255
    return torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear").round().to(torch.uint8)


def _images(n, channels, h=24, w=40):
    ramp = torch.linspace(0, 255, w).round().to(torch.uint8)
    return ramp.view(1, 1, 1, w).expand(n, channels, h, w).contiguous()


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip(channels, codec):
    images = _images(3, channels)
    blobs = encode_jpegs(images, 95)
    assert len(blobs) == 3 and all(isinstance(b, bytes) and b[:2] == b"\xff\xd8" for b in blobs)
    back = decode_jpegs([as_tensor(b) for b in blobs], gray=channels == 1)
    assert back.shape == images.shape
    assert (back.float() - images.float()).abs().max() <= 4


def test_encoding_leaves_the_thread_setting_alone(codec):
    threads = torch.get_num_threads()
    encode_jpegs(_images(2, 3), 90)
    assert torch.get_num_threads() == threads


def test_bad_input_and_damaged_bytes(codec):
    with pytest.raises(ValueError, match="expected uint8"):
        encode_jpegs(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), 90)
    blob = encode_jpegs(_images(1, 1), 95)[0]
    with pytest.raises(MateffnetError, match="cannot decode a stored JPEG image"):
        decode_jpegs([as_tensor(blob[: len(blob) // 3])], gray=True)
    small, large = encode_jpegs(_images(1, 1, 8, 8), 95)[0], encode_jpegs(_images(1, 1, 16, 8), 95)[0]
    assert [t.shape for t in decode_jpeg_list([as_tensor(small), as_tensor(large)], gray=True)] == [(1, 8, 8), (1, 16, 8)]
    with pytest.raises(MateffnetError, match="differ in size"):
        decode_jpegs([as_tensor(small), as_tensor(large)], gray=True)


@pytest.mark.parametrize("channels, quality", [(3, 90), (1, 95)])
def test_pillow_decodes_torchvisions_jpegs_to_the_same_pixels(channels, quality, monkeypatch):
    blobs = [as_tensor(b) for b in encode_jpegs(_texture(4, channels), quality)]  # torchvision's encoder
    by_torchvision = decode_jpegs(blobs, gray=channels == 1)
    monkeypatch.delattr(torchvision.io, "decode_jpeg")
    by_pillow = decode_jpegs(blobs, gray=channels == 1)
    assert torch.equal(by_pillow, by_torchvision)


def test_pillows_jpegs_decode_like_torchvisions_within_the_quantisation_error(monkeypatch):
    images = _texture(2, 3)
    reference = [as_tensor(b) for b in encode_jpegs(images, 90)]
    monkeypatch.delattr(torchvision.io, "encode_jpeg")
    by_pillow = decode_jpegs([as_tensor(b) for b in encode_jpegs(images, 90)], gray=False)
    assert (by_pillow.float() - decode_jpegs(reference, gray=False).float()).abs().max() <= 4
