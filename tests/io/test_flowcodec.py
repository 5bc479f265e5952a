import pytest
import torch

from mateffnet.io.flowcodec import FLOW_CODECS, decode_flow_planes, encode_flow_planes
from mateffnet.io.jpeg import as_tensor
from mateffnet.errors import MateffnetError
from mateffnet.flow import quantize_flow


def _flow_planes(n=6, h=48, w=64, seed=0):
    """Quantised planes like TV-L1's on real video: a still background (exactly 128) and a smoothly moving region."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, h // 8, w // 8, generator=g) * 4
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic")[:, 0]
    flow = torch.zeros(n, h, w)
    flow[:, 10:30, 20:40] = smooth[:, 10:30, 20:40] + 7.5
    return quantize_flow(flow, 20.0)


def _tensors(blobs):
    return [as_tensor(blob) for blob in blobs]


def test_lz4_is_lossless_and_compresses():
    planes = _flow_planes()
    blobs = encode_flow_planes(planes, "lz4")
    assert len(blobs) == len(planes)
    assert sum(map(len, blobs)) < planes.numel() / 2
    assert torch.equal(decode_flow_planes(_tensors(blobs), "lz4", 48, 64), planes)


def test_jpeg_is_close():
    planes = _flow_planes()
    back = decode_flow_planes(_tensors(encode_flow_planes(planes, "jpeg", quality=95)), "jpeg", 48, 64)
    assert back.shape == planes.shape and back.dtype == torch.uint8
    assert 0 < (back.float() - planes.float()).abs().mean() < 1.0


def test_both_codecs_accept_numpy_and_keep_plane_order():
    planes = _flow_planes(n=3)
    for codec in FLOW_CODECS:
        blobs = encode_flow_planes(planes.numpy(), codec)
        back = decode_flow_planes(_tensors(blobs[::-1]), codec, 48, 64)
        assert (back[0].float() - planes[2].float()).abs().mean() < 1.0
        assert (back[0].float() - planes[0].float()).abs().mean() > 1.0


def test_bad_input_gets_a_clear_error():
    planes = _flow_planes(n=2)
    blob = encode_flow_planes(planes, "lz4")[0]
    with pytest.raises(MateffnetError, match="cannot decode a stored LZ4 flow plane of 64x40"):
        decode_flow_planes(_tensors([blob]), "lz4", 40, 64)  # the file's meta says another size
    with pytest.raises(MateffnetError, match="cannot decode a stored LZ4 flow plane"):
        decode_flow_planes(_tensors([blob[: len(blob) // 2]]), "lz4", 48, 64)
    with pytest.raises(MateffnetError, match="unknown flow codec 'png'; expected one of jpeg, lz4"):
        encode_flow_planes(planes, "png")
    with pytest.raises(MateffnetError, match="unknown flow codec 'png'"):
        decode_flow_planes(_tensors([blob]), "png", 48, 64)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, H, W\) planes"):
        encode_flow_planes(planes.float(), "lz4")
