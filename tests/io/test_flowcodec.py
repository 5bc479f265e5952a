import pytest
import torch

from mateffnet.data.transforms import flip_clip, negate_flow_x
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC, FLOW_CODECS, decode_flow_planes, encode_flow_planes
from mateffnet.io.jpeg import as_tensor
from mateffnet.errors import MateffnetError
from mateffnet.flow import dequantize_flow, quantize_flow


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


def test_zstd_is_lossless_and_smaller_than_lz4():
    planes = _flow_planes()
    blobs = encode_flow_planes(planes, "zstd")
    assert sum(map(len, blobs)) < sum(map(len, encode_flow_planes(planes, "lz4")))
    assert torch.equal(decode_flow_planes(_tensors(blobs), "zstd", 48, 64), planes)


@pytest.mark.parametrize("codec", ["zstd-near", "lz4-near"])
def test_the_near_codecs_move_every_value_by_at_most_one_and_keep_zero_flow_exact(codec):
    every_value = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    back = decode_flow_planes(_tensors(encode_flow_planes(every_value, codec)), codec, 16, 16)
    error = (back.int() - every_value.int()).abs()
    assert error.max() == 1 and error.flatten()[128] == 0
    assert back.unique().numel() == 86  # 0, 2, 5, ..., 128, ..., 254: the 86 levels of step 3


@pytest.mark.parametrize("codec", ["zstd-near", "lz4-near"])
def test_near_flow_is_within_0_157_px_at_bound_20_and_smaller_than_the_lossless_codecs(codec):
    planes = _flow_planes()
    blobs = encode_flow_planes(planes, codec)
    back = decode_flow_planes(_tensors(blobs), codec, 48, 64)
    error_px = (dequantize_flow(back, 20.0) - dequantize_flow(planes, 20.0)).abs()
    assert 0 < error_px.max() <= 40 / 255 + 1e-4  # one storage unit at bound 20
    assert torch.equal(back[planes == 128], planes[planes == 128])
    lossless = "zstd" if codec == "zstd-near" else "lz4"
    assert sum(map(len, blobs)) < sum(map(len, encode_flow_planes(planes, lossless)))


def test_the_default_flow_codec_is_lz4_near_in_prepare_and_its_command():
    from mateffnet.cli import build_parser
    from mateffnet.prepare.job import PrepareOptions

    assert DEFAULT_FLOW_CODEC == "lz4-near" and PrepareOptions().flow_codec == DEFAULT_FLOW_CODEC
    args = build_parser().parse_args(["prepare", "videos", "--out", "store"])
    assert args.flow_codec == DEFAULT_FLOW_CODEC
    for codec in FLOW_CODECS:  # the command offers every codec
        assert build_parser().parse_args(["prepare", "videos", "--out", "store", "--flow-codec", codec]).flow_codec == codec


@pytest.mark.parametrize("codec", FLOW_CODECS)
@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("region", [(5, 11, 20, 30), (5, 9, 20, 32)])  # 32 columns: mirrored as 8-byte words
def test_a_region_decodes_like_the_full_plane_cropped_and_mirrored(codec, mirror, region):
    planes = _flow_planes(n=4, h=48, w=64)
    blobs = _tensors(encode_flow_planes(planes, codec))
    whole = decode_flow_planes(blobs, codec, 48, 64)
    top, left, rows, columns = region
    out = torch.full((4, rows, columns), 7, dtype=torch.uint8)
    part = decode_flow_planes(blobs, codec, 48, 64, region=region, mirror=mirror, out=out)
    expected = whole[:, top : top + rows, left : left + columns]
    assert part.data_ptr() == out.data_ptr()
    assert torch.equal(part, expected.flip(-1) if mirror else expected)


@pytest.mark.parametrize("codec", FLOW_CODECS)
def test_a_mirrored_region_with_x_negated_is_the_flipped_flow_stack(codec):
    """What the loader does for a flipped crop (mirror while decoding, then 255 - v on x) equals
    transforms.flip_clip of the full decoded stack, cropped."""
    planes = _flow_planes(n=4, h=48, w=64)
    blobs = _tensors(encode_flow_planes(planes, codec))
    stack = decode_flow_planes(blobs, codec, 48, 64).view(1, 4, 48, 64)  # x0, y0, x1, y1
    mirrored = decode_flow_planes(blobs, codec, 48, 64, region=(5, 11, 20, 30), mirror=True).view(1, 4, 20, 30)
    negate_flow_x(mirrored)
    flipped = flip_clip(stack, flow=True)
    assert torch.equal(mirrored, flipped[..., 5:25, 64 - 41 : 64 - 11])


def test_every_codec_accepts_numpy_and_keep_plane_order():
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
    with pytest.raises(MateffnetError, match="unknown flow codec 'png'; expected one of lz4-near, zstd-near, lz4, zstd, jpeg"):
        encode_flow_planes(planes, "png")
    with pytest.raises(MateffnetError, match="unknown flow codec 'png'"):
        decode_flow_planes(_tensors([blob]), "png", 48, 64)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, H, W\) planes"):
        encode_flow_planes(planes.float(), "lz4")


@pytest.mark.parametrize("codec", ["zstd", "zstd-near", "lz4-near"])
def test_damaged_planes_of_the_new_codecs_get_a_clear_error(codec):
    blob = encode_flow_planes(_flow_planes(n=1), codec)[0]
    with pytest.raises(MateffnetError, match=f"cannot decode a stored {codec} flow plane of 64x48"):
        decode_flow_planes(_tensors([blob[: len(blob) // 2]]), codec, 48, 64)
    with pytest.raises(MateffnetError, match=f"cannot decode a stored {codec} flow plane of 64x40"):
        decode_flow_planes(_tensors([blob]), codec, 40, 64)  # the file's meta says another size
    with pytest.raises(MateffnetError, match=f"cannot decode a stored {codec} flow plane"):
        decode_flow_planes(_tensors([b"\x00" * 16]), codec, 48, 64)
