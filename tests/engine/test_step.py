import pytest
import torch

from mateffnet.config import TrainConfig
from mateffnet.engine.step import StepOptions, TrainStep, make_train_step, use_cuda_graph
from mateffnet.engine.build import make_optimizer
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_cuda_graph_by_default_only_where_the_step_can_be_captured():
    assert use_cuda_graph(None, CUDA, torch.bfloat16, distributed=False, compiled=False)
    assert not use_cuda_graph(None, CPU, torch.float32, distributed=False, compiled=False)
    assert not use_cuda_graph(None, CUDA, torch.float16, distributed=False, compiled=False)
    assert not use_cuda_graph(None, CUDA, torch.bfloat16, distributed=True, compiled=False)
    assert not use_cuda_graph(None, CUDA, torch.bfloat16, distributed=False, compiled=True)
    assert not use_cuda_graph(False, CUDA, torch.bfloat16, distributed=False, compiled=False)


def test_asking_for_a_cuda_graph_where_it_cannot_work_names_the_key_and_the_obstacles():
    with pytest.raises(MateffnetError, match=r"train.cuda_graph: true needs train.device cuda, one process"):
        use_cuda_graph(True, CPU, torch.float32, distributed=True, compiled=False)


def test_the_eager_step_takes_an_sgd_step_with_clipping_and_schedule():
    torch.manual_seed(0)
    model = StreamNet(4, backbone="resnet18", pretrained=None, num_segments=2, input_size=32, embed_dim=16,
                      dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    step = make_train_step(model, optimizer, scheduler, options=StepOptions(clip_grad_norm=1e-3))
    clips = torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)
    before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    loss = step(clips, torch.tensor([0, 3]))
    assert loss.ndim == 0 and not loss.requires_grad
    change = torch.cat([(model.classifier.state_dict()[k] - before[k]).flatten() for k in before])
    total_norm = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
    assert 0 < change.norm() <= 0.1 * 1e-3 * (1 + 1e-4)  # lr × the clipped norm bounds the update
    assert total_norm == pytest.approx(1e-3, rel=1e-3)  # the gradients were clipped in place
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # one scheduler step


def _training_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = StreamNet(5, backbone="resnet18", pretrained=None, num_segments=2, input_size=32, embed_dim=16,
                      dropout=0.5).cuda()
    return (model, *make_optimizer(model, TrainConfig(epochs=2, lr=0.05), steps_per_epoch=4))


def _batches(sizes):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (size, 2, 3, 32, 32), generator=generator, dtype=torch.uint8).cuda(),
             torch.randint(0, 5, (size,), generator=generator).cuda()) for size in sizes]


def _run(batches, graphed: bool):
    """(losses, final state dict, the step) of training a fresh model on `batches`."""
    model, optimizer, scheduler = _training_setup()
    step = make_train_step(model, optimizer, scheduler, options=StepOptions(clip_grad_norm=1.0), graphed=graphed)
    losses = torch.stack([step(clips, labels) for clips, labels in batches]).cpu()
    return losses, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, step


def _assert_same_training(one, other):
    torch.testing.assert_close(one[0], other[0], rtol=1e-4, atol=1e-5)
    for key in one[1]:  # weights, and BatchNorm statistics untouched by the capture's warm-up passes
        torch.testing.assert_close(one[1][key], other[1][key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graphed_step_trains_like_the_eager_step_and_runs_other_shapes_eagerly(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    batches = _batches((4, 4, 4, 3, 4, 4))
    eager, graphed = _run(batches, graphed=False), _run(batches, graphed=True)
    assert graphed[2].graph is not None
    _assert_same_training(graphed, eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("failing_pass", [1, 4], ids=["warm-up", "capture"])
def test_without_memory_for_the_graph_the_step_says_so_and_trains_eagerly(monkeypatch, capsys, failing_pass):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    batches = _batches((4, 4, 4))
    eager = _run(batches, graphed=False)
    forward_backward, calls = TrainStep.forward_backward, []

    def out_of_memory_once(self, clips, labels):
        calls.append(len(clips))
        if len(calls) == failing_pass:  # passes 1-3 warm up, pass 4 is captured
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward_backward(self, clips, labels)

    monkeypatch.setattr(TrainStep, "forward_backward", out_of_memory_once)
    fallback = _run(batches, graphed=True)
    assert fallback[2].eager_only and fallback[2].graph is None
    assert "training eagerly" in capsys.readouterr().err
    _assert_same_training(fallback, eager)
