import pytest

from mateffnet.config import config_from_dict
from mateffnet.engine.plan import describe_plan
from mateffnet.errors import MateffnetError


@pytest.fixture
def config(tmp_path):
    for name in ("jump", "walk"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        (tmp_path / "videos" / name / "v1.avi").write_bytes(b"")
    return config_from_dict({"name": "plan", "data": {"root": str(tmp_path), "format": "folders", "videos": "videos"},
                             "model": {"backbone": "resnet18", "pretrained": None, "num_segments": 4},
                             "train": {"batch_size": 4, "epochs": 3, "device": "cpu"}})


def test_the_plan_names_the_model_the_data_and_the_schedule(config, tmp_path):
    plan = describe_plan(config, tmp_path / "run")
    assert plan.splitlines()[0] == f"run        plan → {tmp_path / 'run'}"
    assert "resnet18 rgb stream, 3 input channels, 112×112, T=4" in plan
    assert "2 classes" in plan
    assert "data       folders: 2 training videos listed, 0 prepared" in plan
    assert "schedule   3 epochs × 0 steps" in plan
    assert plan.splitlines()[-1].startswith("warning    no training video is prepared")


@pytest.mark.parametrize("tuned", [False, True])
def test_the_plans_device_line_names_the_compiled_step_and_whether_its_kernels_are_tuned(config, tmp_path, tuned):
    config.train.compile, config.train.compile_tuning = True, tuned
    device_line = next(line for line in describe_plan(config, tmp_path / "run").splitlines() if line.startswith("device"))
    assert device_line.startswith("device     cpu, float32, torch.compile")
    assert ("torch.compile (kernels tuned)" in device_line) is tuned


def test_the_plan_refuses_what_training_would_refuse(config, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(MateffnetError, match="train.batch_size 4 \\(global\\) must be divisible by the 3 processes"):
        describe_plan(config, tmp_path / "run")
    monkeypatch.delenv("WORLD_SIZE")
    config.model.pretrained = str(tmp_path / "missing.safetensors")
    with pytest.raises(MateffnetError, match="model.pretrained: weights file not found"):
        describe_plan(config, tmp_path / "run")
