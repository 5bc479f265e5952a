import dataclasses

import pytest

from mateffnet.config import DataConfig, ModelConfig, TrainConfig, describe_schema, load_config, save_config
from mateffnet.errors import MateffnetError


def test_defaults_follow_the_paper():
    config = load_config()
    assert (config.train.lr, config.train.batch_size, config.train.epochs, config.train.momentum) == (0.01, 16, 50, 0.9)
    assert config.model.dropout == 0.2 and config.model.heads == 2 and config.model.embed_dim == 512
    assert config.model.backbone == "efficientnet_b0" and config.model.attention is True
    assert config.data.flip is True and config.data.test_segments == 25


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  modality: flow\ntrain:\n  lr: 0.001\n")
    config = load_config(path, ["train.lr=0.005", "data.scales=[1, 0.8]", "model.pretrained=null"])
    assert config.model.modality == "flow"
    assert config.train.lr == 0.005
    assert config.data.scales == [1.0, 0.8]
    assert config.model.pretrained is None


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["train.epochs=3", "model.backbone=resnet18"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=0.1", r"unknown key train\.lrr; did you mean train\.lr\?"),
        ("modle.backbone=resnet18", r"unknown key modle; did you mean model\?"),
        ("model.modality=depth", r"model\.modality must be one of rgb, flow, got 'depth'"),
        ("train.epochs=ten", r"train\.epochs must be an integer, got 'ten'"),
        ("train.batch_size=0", r"train\.batch_size must be a positive integer"),
        ("data.test_crops=5", r"data\.test_crops must be one of 1, 3, 10"),
        ("train.bn=sync", r"train\.bn must be one of train, partial, frozen"),
        ("train.lr", r"expected key=value"),
    ],
)
def test_bad_values_get_one_line_naming_the_key(override, message):
    with pytest.raises(MateffnetError, match=message) as error:
        load_config(None, [override])
    assert "\n" not in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(MateffnetError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(MateffnetError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_schema_lists_every_key_with_help():
    lines = describe_schema().splitlines()
    assert any(line.startswith("train.batch_size") and "GLOBAL" in line for line in lines)
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    assert len(lines) == sum(len(dataclasses.fields(c)) for c in (DataConfig, ModelConfig, TrainConfig))


def test_train_compile_takes_auto_and_the_old_true_or_false(tmp_path):
    assert load_config().train.compile == "auto"
    for text, value in (("auto", "auto"), ("true", True), ("false", False)):
        path = tmp_path / f"{text}.yaml"
        path.write_text(f"train:\n  compile: {text}\n")
        assert load_config(path).train.compile == value
    with pytest.raises(MateffnetError, match=r"train.compile must be one of auto, True, False, got 'yes please'"):
        load_config(None, ["train.compile=yes please"])
