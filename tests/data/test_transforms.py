import pytest
import torch

from mateffnet.data import transforms as T
from mateffnet.flow import compute_flow, dequantize_flow, quantize_flow


def _flow_clip(t=2, pairs=2, h=40, w=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 2 * pairs, h, w), dtype=torch.uint8, generator=g)


def test_flip_of_a_flow_stack_negates_x_values():
    clip = _flow_clip()
    flipped = T.flip_clip(clip, flow=True)
    assert torch.equal(flipped[:, 0::2], 255 - clip[:, 0::2].flip(-1))  # x: mirrored and negated
    assert torch.equal(flipped[:, 1::2], clip[:, 1::2].flip(-1))  # y: mirrored only
    # in pixels: a uniform +6 px x-flow becomes -6 px (within one quantisation step)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 6.0, -2.0
    back = dequantize_flow(T.flip_clip(quantize_flow(flow), flow=True))
    assert torch.allclose(back[:, 0], torch.full((1, 8, 8), -6.0), atol=40 / 255)
    assert torch.allclose(back[:, 1], torch.full((1, 8, 8), -2.0), atol=40 / 255)
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(T.flip_clip(rgb, flow=False), rgb.flip(-1))  # RGB: no value change


def test_flipping_the_flow_matches_the_flow_of_flipped_frames():
    pytest.importorskip("cv2")
    torch.manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 100, 120) * 255, 5, 1, 2)[0, 0]
    frame0, frame1 = texture[10:74, 10:106], texture[10:74, 7:103]  # content moves 3 px right
    flow = quantize_flow(compute_flow(frame0[None], frame1[None], method="farneback"))
    mirrored = quantize_flow(compute_flow(frame0.flip(-1)[None], frame1.flip(-1)[None], method="farneback"))
    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    assert (T.flip_clip(flow, flow=True)[inner].float() - mirrored[inner].float()).abs().mean() < 2.0
    x_unnegated = flow.flip(-1)[inner][:, 0].float()  # mirrored without negating x: off by 2 × 3 px
    assert (x_unnegated - mirrored[inner][:, 0].float()).abs().mean() > 30


def test_ten_crop_has_five_mirrored_views_with_negated_x():
    clip = _flow_clip(h=64, w=80)
    crops = T.eval_crops(64, 80, 56, 10)  # crops of 7/8 of the short side: 56
    assert len(crops) == 10 and [c.flip for c in crops] == [False] * 5 + [True] * 5
    assert {(c.top, c.left) for c in crops[:5]} == {(0, 0), (0, 24), (8, 0), (8, 24), (4, 12)}
    views = torch.stack([T.apply_crop(clip, c, 56, flow=True) for c in crops])
    assert views.shape == (10, 2, 4, 56, 56)
    for i in range(5):
        plain, mirrored = views[i], views[i + 5]
        assert torch.equal(mirrored[:, 0::2], 255 - plain[:, 0::2].flip(-1))
        assert torch.equal(mirrored[:, 1::2], plain[:, 1::2].flip(-1))
    assert torch.equal(views[0], clip[:, :, :56, :56])


def test_one_and_three_crops():
    (centre,) = T.eval_crops(256, 340, 224, 1)
    assert (centre.top, centre.left, centre.height, centre.width) == (16, 58, 224, 224)
    assert [(c.top, c.left) for c in T.eval_crops(256, 340, 224, 3)] == [(16, 0), (16, 58), (16, 116)]
    assert [(c.top, c.left) for c in T.eval_crops(340, 256, 224, 3)] == [(0, 16), (58, 16), (116, 16)]
    with pytest.raises(Exception, match="1, 3 or 10"):
        T.eval_crops(256, 340, 224, 5)


def test_the_same_crop_applies_to_every_frame():
    frame = torch.arange(50 * 70, dtype=torch.float32).view(1, 1, 50, 70)
    clip = torch.cat([frame + 1000 * t for t in range(4)])  # frames differ by a constant only
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        crop = T.train_crop(50, 70, 44, "random", generator=generator)  # side round(50 · 7/8) = 44
        assert 0 <= crop.top <= 6 and 0 <= crop.left <= 26
        out = T.apply_crop(clip, crop, 44, flow=False)
        assert out.shape == (4, 1, 44, 44)
        assert torch.equal(out - out[:1], (torch.arange(4) * 1000.0).view(4, 1, 1, 1).expand_as(out))


def test_multiscale_crop_follows_tsn():
    generator = torch.Generator().manual_seed(0)
    allowed = {256, 224, 192, 168}  # int(256 * s), 224 snapped within 3 px
    seen_pairs, seen_flips = set(), set()
    for _ in range(300):
        crop = T.train_crop(256, 340, 224, "multiscale", generator=generator)
        assert crop.height in allowed and crop.width in allowed
        assert abs(sorted(allowed, reverse=True).index(crop.height) - sorted(allowed, reverse=True).index(crop.width)) <= 1
        h_step, w_step = (256 - crop.height) // 4, (340 - crop.width) // 4
        assert crop.top % max(h_step, 1) == 0 and crop.left % max(w_step, 1) == 0
        seen_pairs.add((crop.height, crop.width))
        seen_flips.add(crop.flip)
    assert len(seen_pairs) == 10 and seen_flips == {True, False}
    clip = torch.randint(0, 256, (3, 20, 256, 340), dtype=torch.uint8)
    out = T.apply_crop(clip, T.Crop(0, 0, 168, 192), 224, flow=True)
    assert out.shape == (3, 20, 224, 224) and out.dtype == torch.uint8


def test_crops_cover_seven_eighths_of_the_short_side_whatever_the_input_size():
    for size in (112, 168, 224):  # the paper's ResNet-18, ResNet-34, EfficientNet-B0 inputs
        crop = T.random_crop(256, 340, size)
        assert (crop.height, crop.width) == (224, 224)
        (centre,) = T.eval_crops(256, 340, size, 1)
        assert (centre.height, centre.width) == (224, 224)
    clip = torch.randint(0, 256, (2, 3, 64, 85), dtype=torch.uint8)
    crop = T.random_crop(64, 85, 112)
    assert (crop.height, crop.width) == (56, 56)
    assert T.apply_crop(clip, crop, 112, flow=False).shape == (2, 3, 112, 112)


def test_batch_crops_equal_per_sample_crops():
    batch = torch.randint(0, 256, (3, 2, 4, 40, 50), dtype=torch.uint8)
    crops = [T.Crop(0, 0, 32, 32, True), T.Crop(5, 9, 32, 32), T.Crop(2, 3, 36, 30, True)]
    out = T.apply_crops(batch, crops, 32, flow=True)
    for i in range(3):
        assert torch.equal(out[i], T.apply_crop(batch[i], crops[i], 32, flow=True))
