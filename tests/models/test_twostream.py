import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet, TwoStreamNet


def pair(num_classes=4, names=None):
    rgb = StreamNet(num_classes, modality="rgb", backbone="resnet18", class_names=names).eval()
    flow = StreamNet(num_classes, modality="flow", backbone="resnet18", flow_length=2, class_names=names).eval()
    return rgb, flow


def clips(batch=2):
    return (torch.randint(0, 256, (batch, 3, 3, 64, 64), dtype=torch.uint8),
            torch.randint(0, 256, (batch, 3, 4, 64, 64), dtype=torch.uint8))


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.5), (0.0, 1.0)])
def test_fused_scores_are_the_weighted_average_of_stream_softmaxes(weights):
    rgb, flow = pair()
    model = TwoStreamNet(rgb, flow, weights=weights)
    rgb_clips, flow_clips = clips()
    with torch.no_grad():
        out = model.stream_probabilities(rgb_clips, flow_clips)
        p_rgb, p_flow = rgb(rgb_clips).softmax(-1), flow(flow_clips).softmax(-1)
    expected = (weights[0] * p_rgb + weights[1] * p_flow) / sum(weights)
    assert torch.allclose(out["fused"], expected, atol=1e-6)
    assert torch.allclose(out["fused"].sum(-1), torch.ones(2))


def test_one_stream_alone_gives_its_own_softmax():
    rgb, _ = pair()
    model = TwoStreamNet(rgb=rgb)
    rgb_clips, _ = clips()
    with torch.no_grad():
        assert torch.allclose(model(rgb=rgb_clips), rgb(rgb_clips).softmax(-1))


def test_streams_with_different_classes_are_refused():
    rgb, _ = pair(4, names=list("abcd"))
    _, flow = pair(4, names=list("abce"))
    with pytest.raises(MateffnetError, match="different classes"):
        TwoStreamNet(rgb, flow)


def test_streams_in_the_wrong_slot_are_refused():
    rgb, flow = pair()
    with pytest.raises(MateffnetError, match="the rgb stream given is a flow model"):
        TwoStreamNet(rgb=flow, flow=rgb)


def test_save_and_load_the_pair(tmp_path):
    rgb, flow = pair(3, names=["x", "y", "z"])
    model = TwoStreamNet(rgb, flow, weights=(1.0, 1.5))
    rgb_clips, flow_clips = clips()
    with torch.no_grad():
        expected = model(rgb_clips, flow_clips)
    model.save_pretrained(tmp_path)
    loaded = TwoStreamNet.from_pretrained(tmp_path)
    assert loaded.weights == (1.0, 1.5)
    assert loaded.class_names == ["x", "y", "z"]
    with torch.no_grad():
        assert torch.equal(loaded(rgb_clips, flow_clips), expected)


def test_loading_a_folder_without_streams_is_a_clear_error(tmp_path):
    with pytest.raises(MateffnetError, match="no stream found"):
        TwoStreamNet.from_pretrained(tmp_path)
    with pytest.raises(MateffnetError, match="model folder not found"):
        TwoStreamNet.from_pretrained(tmp_path / "nope")


def test_a_single_stream_folder_loads_as_a_one_stream_pair(tmp_path):
    rgb, _ = pair(3, names=["x", "y", "z"])
    rgb.save_pretrained(tmp_path / "best")
    loaded = TwoStreamNet.from_pretrained(tmp_path / "best")
    assert set(loaded.streams) == {"rgb"}
    rgb_clips, _ = clips()
    with torch.no_grad():
        assert torch.allclose(loaded(rgb=rgb_clips), rgb(rgb_clips).softmax(-1))
