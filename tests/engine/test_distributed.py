import torch

from mateffnet.engine import distributed


def test_without_torchrun_one_process_on_the_cpu(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    try:
        assert (ctx.rank, ctx.world_size, ctx.device.type, ctx.is_main, ctx.enabled) == (0, 1, "cpu", True, False)
        assert distributed.gather_objects(ctx, {"a": 1}) == [{"a": 1}]
        value = torch.tensor([2.0, 4.0])
        assert torch.equal(distributed.all_reduce_mean(ctx, value), value)
    finally:
        distributed.teardown(ctx)


def test_the_rank_comes_from_torchruns_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: no process group is started
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.local_rank, ctx.is_main) == (3, 1, False)
