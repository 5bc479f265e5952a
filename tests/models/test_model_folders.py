"""Model folders with bad contents: every file is checked against the others before anything is
built, and each problem is one line naming the file (issue 18)."""

import json
import os
import pickle

import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet, TwoStreamNet
from mateffnet.models.streamnet import CONFIG_FILE, WEIGHTS_FILE


def _stream(num_classes=4, modality="rgb", backbone="resnet18", **options):
    torch.manual_seed(0)
    return StreamNet(num_classes, modality=modality, backbone=backbone, input_size=32, embed_dim=32, flow_length=2,
                     class_names=[f"c{i}" for i in range(num_classes)], **options).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    TwoStreamNet(_stream(), _stream(modality="flow")).save_pretrained(root)
    return root


def _copy(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "model"))


from pathlib import Path  # noqa: E402


def _one_line(error):
    assert "\n" not in str(error.value)
    return str(error.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mateffnet-pwned-by-model",))


def test_a_good_folder_still_loads_and_predicts_what_was_saved(folder):
    model = TwoStreamNet.from_pretrained(folder)
    assert model.class_names == ["c0", "c1", "c2", "c3"]
    clips = torch.randint(0, 255, (1, 2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(model.streams["rgb"](clips), _stream()(clips))


def test_a_pickle_saved_as_model_safetensors_is_refused_and_never_run(folder, tmp_path):
    model = _copy(folder, tmp_path)
    with open(model / "rgb" / WEIGHTS_FILE, "wb") as f:
        pickle.dump({"w": _RunsCode()}, f)
    with pytest.raises(MateffnetError, match=rf"{model / 'rgb' / WEIGHTS_FILE}: not a readable safetensors file") as error:
        TwoStreamNet.from_pretrained(model)
    _one_line(error)
    assert not os.path.exists("/tmp/mateffnet-pwned-by-model")


def test_a_truncated_weights_file_is_refused_naming_it(folder, tmp_path):
    model = _copy(folder, tmp_path)
    weights = model / "flow" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(MateffnetError, match=rf"{weights}: not a readable safetensors file"):
        TwoStreamNet.from_pretrained(model)


def _edit_config(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_config_whose_class_count_differs_from_the_weights_is_refused(folder, tmp_path):
    model = _copy(folder, tmp_path)
    _edit_config(model / "rgb" / CONFIG_FILE, num_classes=101, class_names=None)
    with pytest.raises(MateffnetError, match=r"rgb/model.safetensors: the weights classify 4 classes but config.json "
                       r"says num_classes 101"):
        StreamNet.from_pretrained(model / "rgb")


def test_a_config_whose_backbone_differs_from_the_weights_is_refused(folder, tmp_path):
    model = _copy(folder, tmp_path)
    _edit_config(model / "rgb" / CONFIG_FILE, backbone="resnet34")
    with pytest.raises(MateffnetError, match=r"rgb/model.safetensors: weights do not match config.json \(backbone "
                       r"'resnet34', modality 'rgb'\): \d+ missing") as error:
        StreamNet.from_pretrained(model / "rgb")
    _one_line(error)


def test_a_config_whose_modality_differs_from_the_weights_is_refused(folder, tmp_path):
    model = _copy(folder, tmp_path)
    _edit_config(model / "flow" / CONFIG_FILE, modality="rgb", mean=None, std=None)
    with pytest.raises(MateffnetError, match=r"flow/config.json: a rgb model in the flow/ folder"):
        TwoStreamNet.from_pretrained(model)
    with pytest.raises(MateffnetError, match=r"flow/model.safetensors: weights do not match config.json .*first: "
                       r"backbone.conv1.weight is \(64, 4, 7, 7\) here, \(64, 3, 7, 7\) for the config"):
        StreamNet.from_pretrained(model / "flow")


def test_streams_of_different_classes_are_refused_before_building(folder, tmp_path):
    model = _copy(folder, tmp_path)
    TwoStreamNet(None, _stream(5, modality="flow")).save_pretrained(tmp_path / "other")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (model / "flow" / name).write_bytes((tmp_path / "other" / "flow" / name).read_bytes())
    with pytest.raises(MateffnetError, match=r"rgb/config.json and flow/config.json describe different classes \(4 and 5"):
        TwoStreamNet.from_pretrained(model)


@pytest.mark.parametrize("text", ["{", '{"weights": {"rgb": 1}}', '{"weights": {"rgb": "a", "flow": 1}}',
                                  '{"weights": {"rgb": -1, "flow": 1}}', '[1, 2]', '{"weights": {"rgb": 0, "flow": 0}}'])
def test_a_malformed_fusion_file_is_refused_naming_it(folder, tmp_path, text):
    model = _copy(folder, tmp_path)
    (model / "fusion.json").write_text(text)
    with pytest.raises(MateffnetError, match=rf"{model / 'fusion.json'}: (malformed fusion file|fusion weights)") as error:
        TwoStreamNet.from_pretrained(model)
    _one_line(error)


@pytest.mark.parametrize("value", [100000, 0, "big", 64.5])
def test_an_input_size_out_of_range_in_config_json_is_refused(folder, tmp_path, value):
    model = _copy(folder, tmp_path)
    _edit_config(model / "rgb" / CONFIG_FILE, input_size=value)
    with pytest.raises(MateffnetError, match=r"rgb/config.json: input_size must be an integer in 32..1024"):
        StreamNet.from_pretrained(model / "rgb")


@pytest.mark.parametrize("text", ["[1]", "{not json", '{"num_classes": "four"}'])
def test_a_config_json_that_is_not_a_model_config_is_one_line(folder, tmp_path, text):
    model = _copy(folder, tmp_path)
    (model / "rgb" / CONFIG_FILE).write_text(text)
    with pytest.raises(MateffnetError, match=rf"{model / 'rgb' / CONFIG_FILE}: ") as error:
        StreamNet.from_pretrained(model / "rgb")
    _one_line(error)
