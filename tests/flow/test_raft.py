import urllib.error

import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.flow import compute_flow
from mateffnet.flow import raft as raft_module


def test_random_weights_give_flow_of_the_input_size_on_any_size():
    frames = torch.randint(0, 256, (3, 3, 45, 70), dtype=torch.uint8)
    flow = compute_flow(frames[:2], frames[1:], method="raft", weights=None, iterations=2, batch_size=1)
    assert flow.shape == (2, 2, 45, 70) and flow.dtype == torch.float32
    gray = compute_flow(frames[:2, 0], frames[1:, 0], method="raft", weights=None, iterations=2)
    assert gray.shape == (2, 2, 45, 70)


def test_pretrained_weights_without_network_give_a_one_line_error(monkeypatch):
    from torchvision.models.optical_flow import Raft_Small_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(type(Raft_Small_Weights.DEFAULT), "get_state_dict", offline)
    raft_module._load_model.cache_clear()
    frames = torch.zeros(2, 32, 32)
    with pytest.raises(MateffnetError) as info:
        compute_flow(frames[:1], frames[1:], method="raft")
    message = str(info.value)
    assert "could not be downloaded" in message and "--raft-weights" in message and "\n" not in message


def test_local_weights_file_is_loaded_without_running_code(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(1)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    frames = torch.randint(0, 256, (2, 40, 48), dtype=torch.uint8)
    a = compute_flow(frames[:1], frames[1:], method="raft", weights=str(path), iterations=2)
    b = compute_flow(frames[:1], frames[1:], method="raft", weights=path, iterations=2)
    torch.testing.assert_close(a, b)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(MateffnetError, match="is not a RAFT-small state dict"):
        compute_flow(frames[:1], frames[1:], method="raft", weights=str(tmp_path / "bad.pth"))
    with pytest.raises(MateffnetError, match="does not exist"):
        compute_flow(frames[:1], frames[1:], method="raft", weights=str(tmp_path / "missing.pth"))
