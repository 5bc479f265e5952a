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
    # JPEGs that torchvision's encoder wrote: stores of earlier versions, rawframes of other tools
    blobs = [torchvision.io.encode_jpeg(image, quality=quality) for image in _texture(4, channels)]
    by_torchvision = decode_jpegs(blobs, gray=channels == 1)
    monkeypatch.delattr(torchvision.io, "decode_jpeg")
    by_pillow = decode_jpegs(blobs, gray=channels == 1)
    assert torch.equal(by_pillow, by_torchvision)


@pytest.mark.parametrize("channels, quality", [(3, 90), (1, 95)])
def test_the_cpu_encoder_writes_the_pixels_torchvisions_encoder_writes(channels, quality):
    # stores written before the CPU encoder became Pillow's hold the same images as stores written now
    images = _texture(4, channels)
    ours = decode_jpegs([as_tensor(b) for b in encode_jpegs(images, quality)], gray=channels == 1)
    theirs = decode_jpegs([torchvision.io.encode_jpeg(image, quality=quality) for image in images], gray=channels == 1)
    assert torch.equal(ours, theirs)


def test_frames_in_decoder_layout_encode_like_contiguous_images():
    frames = _texture(3, 3).permute(0, 2, 3, 1).contiguous()  # (N, H, W, C), as the video decoder gives them
    as_view = frames.permute(0, 3, 1, 2)
    assert encode_jpegs(as_view, 90) == encode_jpegs(as_view.contiguous(), 90)
