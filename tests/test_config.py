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


# ------------------------------------------------------------- values that passed and failed later (issue 18)


def test_a_number_written_1e_minus_3_is_read_as_the_number_meant(tmp_path):
    assert load_config(None, ["train.lr=1e-3"]).train.lr == pytest.approx(0.001)
    (tmp_path / "run.yaml").write_text("train:\n  lr: 5e-3\n  weight_decay: 1E-4\n")
    config = load_config(tmp_path / "run.yaml")
    assert (config.train.lr, config.train.weight_decay) == (pytest.approx(0.005), pytest.approx(1e-4))
    with pytest.raises(MateffnetError, match=r"train\.lr must be a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-1", r"train\.lr must be > 0, got -1\.0"),
        ("train.lr=0", r"train\.lr must be > 0, got 0\.0"),
        ("train.lr=.nan", r"train\.lr must be > 0, got nan"),
        ("data.workers=-2", r"data\.workers must be >= 0, got -2"),
        ("train.max_steps_per_epoch=0", r"train\.max_steps_per_epoch must be a positive integer, got 0"),
        ("model.input_size=0", r"model\.input_size must be >= 32 and <= 1024, got 0"),
        ("model.input_size=100000", r"model\.input_size must be >= 32 and <= 1024, got 100000"),
        ("train.momentum=2", r"train\.momentum must be >= 0 and < 1, got 2\.0"),
        ("train.warmup_epochs=-1", r"train\.warmup_epochs must be >= 0, got -1\.0"),
        ("train.val_every=-1", r"train\.val_every must be >= 0, got -1"),
        ("model.dropout=1", r"model\.dropout must be >= 0 and < 1, got 1\.0"),
        ("data.scales=[0.5, 2]", r"data\.scales must be > 0 and <= 1, got 2\.0"),
        ("data.val_segments=0", r"data\.val_segments must be a positive integer, got 0"),
        ("model.heads=3", r"model\.embed_dim \(512\) must be a multiple of model\.heads \(3\)"),
    ],
)
def test_values_out_of_their_declared_range_are_refused_when_read(override, message):
    with pytest.raises(MateffnetError, match=message) as error:
        load_config(None, [override])
    assert "\n" not in str(error.value)


def test_tuning_the_compiled_step_without_compiling_it_is_refused_and_allowed_with_auto_or_true():
    with pytest.raises(MateffnetError, match=r"train\.compile_tuning: true .* needs train\.compile auto or true"):
        load_config(None, ["train.compile_tuning=true", "train.compile=false"])
    for setting in ("auto", "true"):
        assert load_config(None, ["train.compile_tuning=true", f"train.compile={setting}"]).train.compile_tuning


def test_every_number_key_declares_its_range_next_to_its_help():
    import typing

    for cls in (DataConfig, ModelConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = any(t in (int, float) for t in (hints[f.name], *typing.get_args(hints[f.name])))
            numeric = numeric or typing.get_args(hints[f.name]) in ((int,), (float,))
            if numeric and f.name not in ("split", "test_crops", "seed"):  # choices / any integer
                assert f.metadata.get("range") is not None, f"{cls.__name__}.{f.name} declares no range"
    assert any(line.startswith("train.lr") and "[> 0]" in line for line in describe_schema().splitlines())


def test_good_values_at_the_edges_of_their_ranges_are_kept():
    config = load_config(None, ["data.workers=0", "train.val_every=0", "train.momentum=0", "model.input_size=32",
                                "train.warmup_epochs=0.5", "model.dropout=0"])
    assert (config.data.workers, config.train.val_every, config.model.input_size) == (0, 0, 32)


def test_a_section_given_twice_in_a_yaml_file_is_refused_naming_both_lines(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  lr: 0.1\nmodel:\n  heads: 2\ntrain:\n  epochs: 3\n")
    with pytest.raises(MateffnetError, match=r"run.yaml:5: key 'train' appears twice in one mapping \(first on line 1\)"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "keys.yaml").write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(MateffnetError, match=r"keys.yaml:3: key 'lr' appears twice"):
        load_config(tmp_path / "keys.yaml")


def test_a_yaml_python_tag_is_still_refused(tmp_path):
    (tmp_path / "evil.yaml").write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(MateffnetError, match="evil.yaml: not valid YAML"):
        load_config(tmp_path / "evil.yaml")
