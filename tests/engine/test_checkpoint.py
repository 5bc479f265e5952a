import random

import numpy as np
import pytest
import torch

from mateffnet.engine.checkpoint import latest_checkpoint, load_train_state, rng_state, save_best, save_checkpoint, set_rng_state
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet


@pytest.fixture(scope="module")
def model():
    return StreamNet(3, backbone="resnet18", input_size=32, num_segments=2)


def test_checkpoints_keep_the_newest_and_last_points_at_it(tmp_path, model):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, model, {"epoch": epoch}, keep=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch_0002", "epoch_0003"]
    assert latest_checkpoint(tmp_path).name == "epoch_0003"
    assert (tmp_path / "last").resolve() == (tmp_path / "checkpoints" / "epoch_0003").resolve()
    assert load_train_state(latest_checkpoint(tmp_path)) == {"epoch": 3}
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_checkpoint_folder_without_its_state_file_is_not_resumed_from(tmp_path, model):
    save_checkpoint(tmp_path, 1, model, {"epoch": 1}, keep=5)
    (tmp_path / "checkpoints" / "epoch_0002").mkdir()  # an interrupted copy, say
    assert latest_checkpoint(tmp_path).name == "epoch_0001"
    assert latest_checkpoint(tmp_path / "nothing here") is None


def test_a_damaged_state_file_is_named_in_the_error(tmp_path, model):
    folder = save_checkpoint(tmp_path, 1, model, {"epoch": 1})
    (folder / "train_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(MateffnetError, match="train_state.pt: damaged"):
        load_train_state(folder)
    (folder / "checksums.json").unlink()  # as checkpoints were before they carried checksums
    with pytest.raises(MateffnetError, match="train_state.pt: refused: not a training state this mateffnet wrote"):
        load_train_state(folder)


def test_save_best_replaces_the_previous_best_model(tmp_path, model):
    save_best(tmp_path, model)
    other = StreamNet(3, backbone="resnet18", input_size=32, num_segments=2)
    save_best(tmp_path, other)
    reloaded = StreamNet.from_pretrained(tmp_path / "best")
    for name, tensor in other.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_restoring_the_generator_states_repeats_the_same_draws(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")  # survives weights_only loading
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
