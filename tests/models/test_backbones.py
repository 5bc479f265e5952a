import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models.backbones import PAPER_INPUT_SIZE, create_backbone, default_input_size


def test_a_backbone_maps_frames_to_feature_maps_for_any_input_channels():
    for in_chans in (3, 20):
        backbone = create_backbone("resnet18", in_chans=in_chans)
        features = backbone.forward_features(torch.zeros(2, in_chans, 64, 64))
        assert features.shape == (2, 512, 2, 2)


def test_the_papers_input_sizes_and_a_default_for_other_backbones():
    assert default_input_size("resnet18") == PAPER_INPUT_SIZE["resnet18"] == 112
    assert default_input_size("efficientnet_b0") == 224
    assert default_input_size("mobilenetv3_small_100") == 224


def test_an_unknown_backbone_is_named():
    with pytest.raises(MateffnetError, match="unknown backbone 'resnet19'"):
        create_backbone("resnet19")


def test_a_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(MateffnetError):
        create_backbone("resnet18", pretrained=tmp_path / "missing.safetensors")
