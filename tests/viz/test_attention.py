import numpy as np
import pytest
import torch
from matplotlib.image import imread

from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet
from mateffnet.viz.attention import (
    feature_grid,
    plot_segment_attention,
    plot_spatiotemporal_attention,
    received_attention,
    segment_attention_figure,
    run_attention,
    spatiotemporal_attention_figure,
    spatiotemporal_maps,
    upsample,
)


def frames(segments=4, height=48, width=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (segments, height, width, 3), dtype=np.uint8)


def softmax_rows(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_png_with_content(path, min_width=200):
    image = imread(path)
    assert image.ndim == 3 and image.shape[1] >= min_width
    assert image[..., :3].std() > 0.05  # not a blank page
    return image


def test_received_attention_is_the_mean_over_queries_of_each_key_column():
    weights = np.array([[[1.0, 0.0, 0.0],
                         [0.5, 0.5, 0.0],
                         [0.0, 0.0, 1.0]],
                        [[0.2, 0.3, 0.5],
                         [0.2, 0.3, 0.5],
                         [0.2, 0.3, 0.5]]])
    received = received_attention(weights)
    np.testing.assert_allclose(received, [[0.5, 1 / 6, 1 / 3], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(received.sum(-1), [1.0, 1.0])
    np.testing.assert_allclose(received_attention(torch.tensor(weights)), received)


def test_spatiotemporal_maps_put_each_token_at_its_segment_row_and_column():
    segments, h, w = 3, 2, 4
    tokens = segments * h * w
    weights = np.full((2, tokens, tokens), 0.0)
    target = 1 * h * w + 1 * w + 3  # segment 1, row 1, column 3 (segment-major, then row-major)
    weights[0, :, target] = 1.0  # head 1: every query looks at that one position
    weights[1] = 1.0 / tokens  # head 2: uniform
    maps = spatiotemporal_maps(weights, segments, (h, w))
    assert maps.shape == (2, segments, h, w)
    assert maps[0, 1, 1, 3] == pytest.approx(1.0)
    assert maps[0].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(maps[1], 1.0 / tokens)
    with pytest.raises(MateffnetError, match="expected segments × h × w = 3 × 3 × 3"):
        spatiotemporal_maps(weights, segments, (3, 3))


def test_feature_grid_matches_the_input_aspect():
    assert feature_grid(49, 224, 224) == (7, 7)
    assert feature_grid(12, 96, 128) == (3, 4)
    assert feature_grid(12, 128, 96) == (4, 3)
    assert feature_grid(7, 50, 50) in {(1, 7), (7, 1)}


def test_upsample_is_bilinear_like_torch_interpolate():
    maps = np.random.default_rng(1).random((2, 3, 5))
    expected = torch.nn.functional.interpolate(torch.tensor(maps)[None], size=(12, 17), mode="bilinear",
                                               align_corners=False)[0].numpy()
    np.testing.assert_allclose(upsample(maps, 12, 17), expected, atol=1e-12)


def test_segment_attention_figure_is_written(tmp_path):
    logits = np.random.default_rng(2).normal(size=(2, 4, 4)) * 2
    path = plot_segment_attention(frames(), softmax_rows(logits), tmp_path / "sub" / "segments.png",
                                  title="test", frame_labels=["f0", "f8", "f16", "f24"])
    assert path == tmp_path / "sub" / "segments.png"
    assert_png_with_content(path)
    assert [p.name for p in path.parent.iterdir()] == ["segments.png"]  # no temporary file left


def test_segment_figure_draws_received_attention_as_bars_and_the_matrices():
    weights = softmax_rows(np.random.default_rng(3).normal(size=(2, 4, 4)) * 2)
    figure = segment_attention_figure(frames(), weights)
    bar_axes = [ax for ax in figure.axes if ax.patches]
    assert len(bar_axes) == 1
    heights = np.array([bar.get_height() for bar in bar_axes[0].patches]).reshape(2, 4)
    np.testing.assert_allclose(heights, received_attention(weights))
    matrices = [np.asarray(ax.images[0].get_array()) for ax in figure.axes if ax.images and ax.images[0].get_array().ndim == 2]
    assert len(matrices) == 2
    np.testing.assert_allclose(matrices[1], weights[1])


def test_segment_attention_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(MateffnetError, match=r"must be \(heads, 4, 4\) for 4 frames, got shape \(2, 5, 5\)"):
        plot_segment_attention(frames(), np.full((2, 5, 5), 0.2), tmp_path / "x.png")
    with pytest.raises(MateffnetError, match="frames must be uint8"):
        plot_segment_attention(frames().astype(np.float32), np.full((2, 4, 4), 0.25), tmp_path / "x.png")
    with pytest.raises(MateffnetError, match="3 frame labels given for 4 frames"):
        plot_segment_attention(frames(), np.full((2, 4, 4), 0.25), tmp_path / "x.png", frame_labels=["a", "b", "c"])
    assert not (tmp_path / "x.png").exists()


def test_spatiotemporal_overlays_are_the_upsampled_received_attention(tmp_path):
    segments, h, w = 2, 2, 2
    tokens = segments * h * w
    weights = np.full((2, tokens, tokens), 0.01)
    weights[0, :, 0] = 1.0  # head 1: segment 0, top-left position
    weights[1, :, tokens - 1] = 1.0  # head 2: segment 1, bottom-right position
    weights /= weights.sum(-1, keepdims=True)
    figure = spatiotemporal_attention_figure(frames(segments, 40, 60), weights, (h, w))
    axes = np.array(figure.axes[: 3 * segments]).reshape(3, segments)  # rows: frames, head 1, head 2
    np.testing.assert_array_equal(axes[0, 1].images[0].get_array(), frames(segments, 40, 60)[1])
    maps = spatiotemporal_maps(weights, segments, (h, w))
    for head in range(2):
        for t in range(segments):
            overlay = np.asarray(axes[head + 1, t].images[1].get_array())
            assert overlay.shape == (40, 60)
            np.testing.assert_allclose(overlay, upsample(maps[head], 40, 60)[t])
    head1 = np.asarray(axes[1, 0].images[1].get_array())
    assert head1[:20, :30].mean() > head1[20:, 30:].mean()  # the top-left quarter is the hot one
    assert axes[1, 0].get_title().endswith("%") and axes[1, 0].get_title() != axes[1, 1].get_title()
    assert_png_with_content(plot_spatiotemporal_attention(frames(segments), weights, tmp_path / "st.png"))


def test_run_attention_returns_segment_weights(tmp_path):
    model = StreamNet(3, backbone="resnet18", input_size=32)
    clips = torch.randint(0, 256, (2, 5, 3, 32, 32), dtype=torch.uint8)
    result = run_attention(model, clips)
    assert not model.training
    assert result.logits.shape == (2, 3)
    assert result.weights.shape == (2, 2, 5, 5) and result.segments == 5 and result.grid is None
    torch.testing.assert_close(result.weights.sum(-1), torch.ones(2, 2, 5))
    path = plot_segment_attention(clips[0].permute(0, 2, 3, 1).numpy(), result.weights[0], tmp_path / "a.png")
    assert_png_with_content(path)


def test_run_attention_finds_the_spatiotemporal_grid(tmp_path):
    model = StreamNet(3, backbone="resnet18", input_size=64, attention_tokens="spatiotemporal")
    clips = torch.randint(0, 256, (1, 3, 3, 64, 64), dtype=torch.uint8)
    result = run_attention(model, clips)
    assert result.grid == (2, 2)  # ResNet-18 reduces 64 → 2
    assert result.weights.shape == (1, 2, 12, 12)
    path = plot_spatiotemporal_attention(clips[0].permute(0, 2, 3, 1).numpy(), result.weights[0],
                                         tmp_path / "st.png", result.grid)
    assert_png_with_content(path)


def test_run_attention_without_attention_layer_is_an_error():
    model = StreamNet(3, backbone="resnet18", input_size=32, attention=False)
    with pytest.raises(MateffnetError, match="no attention layer"):
        run_attention(model, torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8))
