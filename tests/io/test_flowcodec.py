import pytest
import torch

from mateffnet.data.transforms import flip_clip, negate_flow_x
from mateffnet.io import nvcomp
from mateffnet.io.flowcodec import (DEFAULT_FLOW_CODEC, FLOW_CODECS, blob_starts, decode_flow_batch, decode_flow_planes,
                                     encode_flow_planes, pack_blobs)
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


@pytest.mark.parametrize("codec", FLOW_CODECS)
def test_a_packed_batch_of_samples_of_two_sizes_decodes_to_each_sample_s_planes(codec):
    small, large = _flow_planes(4, 24, 40, seed=1), _flow_planes(4, 48, 64, seed=2)
    packed = [pack_blobs(_tensors(encode_flow_planes(planes, codec)), codec) for planes in (small, large)]
    data, lengths = torch.cat([d for d, _ in packed]), torch.cat([n for _, n in packed])
    if codec != "jpeg":
        assert all(len(d) % 16 == 0 for d, _ in packed)  # so the next sample's blobs stay aligned
        assert (blob_starts(lengths, codec) % 16 == 0).all()
    decoded = decode_flow_batch(data, lengths, codec, [(24, 40), (48, 64)])
    for planes, got in zip((small, large), decoded):
        expected = decode_flow_planes(_tensors(encode_flow_planes(planes, codec)), codec, *planes.shape[-2:])
        assert got.shape == planes.shape and torch.equal(got, expected)


def test_a_damaged_blob_of_a_packed_batch_gets_a_clear_error():
    data, lengths = pack_blobs(_tensors(encode_flow_planes(_flow_planes(2), "lz4-near")), "lz4-near")
    with pytest.raises(MateffnetError, match="cannot decode a stored lz4-near flow plane of 64x48"):
        decode_flow_batch(data, lengths - 3, "lz4-near", [(48, 64)])


@pytest.mark.skipif(not torch.cuda.is_available() or not nvcomp.available(), reason="needs CUDA and nvCOMP")
@pytest.mark.parametrize("codec", ["lz4", "lz4-near", "zstd", "zstd-near"])
def test_nvcomp_decodes_the_stored_blobs_as_the_cpu_does(codec):
    samples = [_flow_planes(40, 48, 64, seed=s) for s in range(3)] + [_flow_planes(40, 256, 341, seed=9)]
    packed = [pack_blobs(_tensors(encode_flow_planes(planes, codec)), codec) for planes in samples]
    data, lengths = torch.cat([d for d, _ in packed]), torch.cat([n for _, n in packed])
    shapes = [tuple(planes.shape[-2:]) for planes in samples]
    on_cpu = decode_flow_batch(data, lengths, codec, shapes)
    on_gpu = decode_flow_batch(data.pin_memory(), lengths, codec, shapes, "cuda")
    for expected, got in zip(on_cpu, on_gpu):
        assert got.is_cuda and torch.equal(got.cpu(), expected)
    # Stored planes are checked (CRC-32) before they reach the decoder; what it can still meet is a wrong size.
    # (Only a larger one: nvCOMP 6.0 writes past a buffer too small for a block, an illegal memory access.)
    with pytest.raises(MateffnetError, match=rf"nvCOMP could not decode 40 of 160 stored {codec.split('-')[0]} flow"):
        decode_flow_batch(data, lengths, codec, shapes[:3] + [(257, 341)], "cuda")
