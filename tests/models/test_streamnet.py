import json

import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models import PAPER_INPUT_SIZE, StreamConfig, StreamNet

BACKBONES = ["efficientnet_b0", "resnet18", "resnet34", "resnet50", "tf_efficientnet_lite0"]


def random_clips(model: StreamNet, batch=2, segments=3, size=64):
    return torch.randint(0, 256, (batch, segments, model.config.in_chans, size, size), dtype=torch.uint8)


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("modality", ["rgb", "flow"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shape_for_every_backbone_modality_and_attention(backbone, modality, attention):
    model = StreamNet(7, modality=modality, backbone=backbone, flow_length=5, attention=attention).eval()
    clips = random_clips(model)
    assert clips.shape[2] == (3 if modality == "rgb" else 10)
    with torch.no_grad():
        logits = model(clips)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    if attention:
        assert model.attention_weights.shape == (2, 2, 3, 3)
    else:
        assert model.attention_weights is None


def test_paper_input_sizes_are_the_defaults():
    assert PAPER_INPUT_SIZE == {"efficientnet_b0": 224, "resnet18": 112, "resnet34": 168, "resnet50": 224,
                                "tf_efficientnet_lite0": 224}
    assert StreamConfig(num_classes=3, backbone="resnet34").input_size == 168
    assert StreamConfig(num_classes=3, backbone="resnet34", input_size=200).input_size == 200


def test_table1_dimensions_of_efficientnet_b0_stream():
    model = StreamNet(101).eval()
    frames = torch.zeros(1, 3, 224, 224)
    assert model.backbone.forward_features(frames).shape == (1, 1280, 7, 7)
    assert (model.embed.in_features, model.embed.out_features) == (1280, 512)
    assert model.attention.heads == 2
    assert model.attention.proj.out_features == 512
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 101)
    assert model.dropout.p == 0.2
    assert model.config.num_segments == 8 and model.config.in_chans == 3
    assert StreamNet(101, modality="flow").config.in_chans == 20


def test_attention_weights_sum_to_one_over_keys():
    model = StreamNet(4, backbone="resnet18").eval()
    with torch.no_grad():
        model(random_clips(model, batch=3, segments=5))
    weights = model.attention_weights
    assert weights.shape == (3, 2, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 5))
    assert (weights >= 0).all()


def test_spatiotemporal_tokens_cover_every_position_of_every_segment():
    model = StreamNet(4, attention_tokens="spatiotemporal").eval()
    clips = torch.randint(0, 256, (1, 2, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        assert model(clips).shape == (1, 4)
    assert model.attention_weights.shape == (1, 2, 2 * 7 * 7, 2 * 7 * 7)


def test_backward_reaches_the_backbone_stem():
    model = StreamNet(5, modality="flow", flow_length=2, backbone="efficientnet_b0")
    loss = torch.nn.functional.cross_entropy(model(random_clips(model)), torch.tensor([1, 3]))
    loss.backward()
    stem = model.backbone.conv_stem.weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert model.attention.qkv.weight.grad.abs().sum() > 0


def test_segment_count_can_differ_between_training_and_testing():
    model = StreamNet(3, backbone="resnet18", num_segments=8).eval()
    with torch.no_grad():
        assert model(random_clips(model, batch=1, segments=25)).shape == (1, 3)


def test_model_normalises_with_its_own_constants():
    rgb = StreamNet(3, backbone="efficientnet_b0")
    assert rgb.config.mean == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert rgb.config.std == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
    flow = StreamNet(3, modality="flow", backbone="resnet18", flow_length=1)
    values = torch.tensor([0.0, 128.0, 255.0]).view(1, 1, 3).expand(2, 1, 3).reshape(1, 2, 1, 3)
    assert flow.normalize(values).flatten().tolist() == pytest.approx([-1.0, 0.0, 127 / 128] * 2)
    lite0 = StreamConfig(num_classes=3, backbone="tf_efficientnet_lite0")
    assert StreamNet(config=lite0).config.mean == pytest.approx([127.5] * 3)


def test_wrong_channel_count_is_a_one_line_error():
    model = StreamNet(3, modality="flow", flow_length=10, backbone="resnet18")
    with pytest.raises(MateffnetError, match=r"flow stream expects .* 20 \(2 × flow_length 10\)"):
        model(torch.zeros(1, 2, 3, 32, 32))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"modality": "depth"}, "modality must be one of rgb, flow"),
        ({"heads": 3}, "embed_dim .512. must be divisible by heads .3."),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"attention_tokens": "pixels"}, "attention_tokens must be one of"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but num_classes is 3"),
    ],
)
def test_bad_options_are_rejected_with_the_key_named(options, message):
    with pytest.raises(MateffnetError, match=message):
        StreamConfig(num_classes=3, **options)


def test_unknown_backbone_is_rejected():
    with pytest.raises(MateffnetError, match="unknown backbone 'efficientnet_b9'"):
        StreamNet(3, backbone="efficientnet_b9")


@pytest.mark.parametrize("modality", ["rgb", "flow"])
def test_save_then_load_predicts_exactly_the_same(tmp_path, modality):
    model = StreamNet(6, modality=modality, backbone="efficientnet_b0", flow_length=3,
                      class_names=[f"class{i}" for i in range(6)]).eval()
    with torch.no_grad():  # move BN statistics away from their init so they must be saved too
        model.train()(random_clips(model, batch=4))
        model.eval()
    clips = random_clips(model)
    with torch.no_grad():
        expected = model(clips)
    model.save_pretrained(tmp_path / "stream")
    assert json.loads((tmp_path / "stream" / "config.json").read_text())["modality"] == modality
    loaded = StreamNet.from_pretrained(tmp_path / "stream")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(clips), expected)


def test_loading_a_folder_without_weights_names_the_missing_file(tmp_path):
    StreamNet(2, backbone="resnet18").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(MateffnetError, match="missing model.safetensors"):
        StreamNet.from_pretrained(tmp_path)


def test_config_with_unknown_key_is_rejected(tmp_path):
    StreamNet(2, backbone="resnet18").save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["num_segmnets"] = 3
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(MateffnetError, match="unknown key.*num_segmnets"):
        StreamNet.from_pretrained(tmp_path)
