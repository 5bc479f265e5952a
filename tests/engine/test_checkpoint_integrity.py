"""Checkpoints: checksums verified on load, hostile or damaged files refused in one line, a full disk
leaves the last good checkpoint and no temporary folder (issue 18)."""

import errno
import os
import pickle

import pytest
import torch

from mateffnet.engine.checkpoint import STATE_FILE, latest_checkpoint, load_train_state
from mateffnet.engine.train import train
from mateffnet.errors import MateffnetError
from mateffnet.fileio import CHECKSUM_FILE
from mateffnet.models import StreamNet

from mateffnet.config import load_config
from mateffnet.engine.checkpoint import save_best
from tests.helpers.toydata import BrightnessClips

CLASSES = [f"level{i}" for i in range(4)]


def small_config(**overrides):
    settings = {
        "model.backbone": "resnet18", "model.pretrained": None, "model.num_segments": 2, "model.input_size": 32,
        "model.embed_dim": 32, "train.batch_size": 8, "train.schedule": "constant", "train.device": "cpu",
        "data.workers": 0, "train.deterministic": True, "train.bn": "frozen", **overrides,
    }
    return load_config(None, [f"{k}={'null' if v is None else v}" for k, v in settings.items()])


def _run(out, epochs=2, resume=False, val=False):
    config = small_config(**{"train.epochs": epochs})
    return train(config, out, resume=resume, train_set=BrightnessClips(16),
                 val_set=BrightnessClips(16, views=1) if val else None, class_names=CLASSES, progress=False)


def _leftovers(out):
    return sorted(p.name for p in out.rglob(".*") if p.name.endswith(".tmp") or ".old" in p.name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _run(out, epochs=1)
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_every_checkpoint_lists_the_checksums_of_its_files(trained):
    folder = latest_checkpoint(trained)
    names = set(__import__("json").loads((folder / CHECKSUM_FILE).read_text())["sha256"])
    assert {STATE_FILE, "model.safetensors", "config.json"} <= names
    assert load_train_state(folder)["epoch"] == 1


def test_4_kib_flipped_inside_the_training_state_is_refused_on_resume(tmp_path, trained):
    out = _copy_run(trained, tmp_path / "run")
    state = latest_checkpoint(out) / STATE_FILE
    data = bytearray(state.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    state.write_bytes(bytes(data))
    with pytest.raises(MateffnetError, match=rf"{state}: damaged \(its SHA-256 differs from checksums.json") as error:
        _run(out, epochs=2, resume=True)
    assert "\n" not in str(error.value)
    assert os.readlink(out / "last") == os.path.join("checkpoints", "epoch_0001")  # nothing good lost


def test_a_truncated_model_file_is_refused_on_resume(tmp_path, trained):
    out = _copy_run(trained, tmp_path / "run")
    weights = latest_checkpoint(out) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(MateffnetError, match=rf"{weights}: damaged"):
        _run(out, epochs=2, resume=True)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mateffnet-pwned-by-train-state",))


def test_a_hostile_training_state_is_refused_without_advice_to_run_it(tmp_path):
    folder = tmp_path / "checkpoints" / "epoch_0001"
    folder.mkdir(parents=True)
    with open(folder / STATE_FILE, "wb") as f:
        pickle.dump({"epoch": _RunsCode()}, f)
    with pytest.raises(MateffnetError) as error:
        load_train_state(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / STATE_FILE}: refused") and "nothing in it was run" in message
    assert "weights_only" not in message and "likely succeed" not in message and "\n" not in message
    assert not os.path.exists("/tmp/mateffnet-pwned-by-train-state")


def test_a_checkpoint_without_checksums_still_loads(tmp_path, trained):
    out = _copy_run(trained, tmp_path / "run")
    (latest_checkpoint(out) / CHECKSUM_FILE).unlink()
    result = _run(out, epochs=2, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_a_disk_filling_during_training_keeps_the_last_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def save_until_full(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(MateffnetError, match=r"checkpoint of epoch 2 not written: .*train_state.pt: no space left on "
                       r"device; free some space \(ENOSPC\); the last good checkpoint .*epoch_0001 is kept") as error:
        _run(out, epochs=3)
    assert "\n" not in str(error.value)
    assert _leftovers(out) == []
    assert os.readlink(out / "last") == os.path.join("checkpoints", "epoch_0001")
    monkeypatch.setattr(torch, "save", real_save)
    result = _run(out, epochs=3, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_a_full_disk_while_saving_the_best_model_keeps_the_previous_best(tmp_path, monkeypatch, trained):
    out = _copy_run(trained, tmp_path / "run")
    before = (out / "best" / "model.safetensors").read_bytes()
    model = StreamNet.from_pretrained(out / "best")
    real = StreamNet.save_pretrained

    def full(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))

    monkeypatch.setattr(StreamNet, "save_pretrained", full)
    with pytest.raises(MateffnetError, match=r"best model not written: .*model.safetensors: no space left on device.*"
                       r"the previous .*best is kept"):
        save_best(out, model)
    assert _leftovers(out) == []
    assert (out / "best" / "model.safetensors").read_bytes() == before
