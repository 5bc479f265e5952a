import numpy as np
import pytest
import torch

from mateffnet.data.synthetic import CLASS_NAMES, render_video, video_rng, write_video
from mateffnet.engine.inference import decode_for, predict, segment_frames, stream_views
from mateffnet.models import StreamNet, TwoStreamNet

FAST = {"inner_iterations": 5, "outer_iterations": 1, "epsilon": 0.0}


def moving_square(frames=12, size=48, step=2):
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        video[t, 16:32, 4 + step * t:20 + step * t] = 255
    return video


def stream(modality, **options):
    return StreamNet(3, modality=modality, backbone="resnet18", input_size=42, num_segments=3, flow_length=2,
                     frame_size="48", flow_params=FAST, **options).eval()


def test_rgb_views_are_the_evaluators_crops_of_the_sampled_frames():
    frames = moving_square()
    views = stream_views(frames, stream("rgb"), segments=3, crops=10, device=torch.device("cpu"))
    assert views.shape == (10, 3, 3, 42, 42) and views.dtype == torch.uint8
    assert torch.equal(views[5], views[0].flip(-1))  # the 6th view mirrors the 1st (RGB: no value change)


def test_flow_views_are_interleaved_stacks_of_the_right_motion():
    frames = moving_square(step=2)
    views = stream_views(frames, stream("flow"), segments=3, crops=1, device=torch.device("cpu"))
    assert views.shape == (1, 3, 4, 42, 42)
    x, y = views[0, :, 0::2].float(), views[0, :, 1::2].float()
    moving = x > 128 + 3  # where the square moved right by 2 px: x-flow ≈ +2 px ≈ 128 + 12.75
    assert moving.any()
    assert (x[moving] - 128).mean() * 40 / 255 == pytest.approx(2.0, abs=0.7)
    assert (y[moving] - 128).abs().mean() < 4


def test_segment_frames_show_the_centre_view_of_each_segment():
    frames = moving_square()
    shown = segment_frames(frames, stream("rgb"), 3)
    assert shown.shape == (3, 42, 42, 3)
    assert not np.array_equal(shown[0], shown[2])  # the square moved between the first and last segment


def test_predict_reports_each_video_and_names_the_one_that_fails(tmp_path):
    video = write_video(tmp_path / "spin.mp4", render_video("spin_cw", video_rng(0, CLASS_NAMES.index("spin_cw"), 0), 12, 48))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    model = TwoStreamNet(stream("rgb", class_names=["a", "b", "c"]), stream("flow", class_names=["a", "b", "c"]))
    results = list(predict([video, tmp_path / "broken.mp4", video], model, segments=3, crops=1))
    assert [r.error is None for r in results] == [True, False, True]
    assert "broken.mp4" in results[1].error
    for result in (results[0], results[2]):
        for name in ("rgb", "flow", "fused"):
            assert result.probabilities[name].shape == (3,)
            assert result.probabilities[name].sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(results[0].probabilities["fused"], results[2].probabilities["fused"], rtol=1e-6)
    top = results[0].top(["a", "b", "c"], k=2)
    assert list(top) == ["fused", "rgb", "flow"] and len(top["fused"]) == 2
    assert decode_for(model.rgb, video).shape[1:] == (48, 48, 3)
