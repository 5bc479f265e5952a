import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.runtime import cores_per_process, cpu_cores, resolve_device, torchrun_env


def test_torchruns_environment_is_read_with_single_process_defaults(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    env = torchrun_env()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (0, 1, 0, 1)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    env = torchrun_env()
    assert (env.rank, env.world_size, env.local_world_size) == (5, 8, 4)


def test_each_local_process_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert cores_per_process() == cpu_cores() >= 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10 * cpu_cores()))
    assert cores_per_process() == 1


def test_one_device_vocabulary():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "mps", ""):
        with pytest.raises(MateffnetError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_gpu_without_one_says_so():
    with pytest.raises(MateffnetError, match="'cuda:1' asked for, but PyTorch sees no CUDA GPU; use --device cpu"):
        resolve_device("cuda:1")
