import shutil

import pytest
import torch
import torch._inductor.config

from mateffnet.config import TrainConfig
import mateffnet.engine.step as step_module
from mateffnet.engine.build import make_optimizer
from mateffnet.engine.distributed import data_parallel
from mateffnet.engine.step import StepOptions, TrainStep, make_train_step, use_compile, use_cuda_graph
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet

CPU, CUDA, CUDA_0 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda", 0)


def test_cuda_graph_by_default_only_where_the_step_can_be_captured():
    assert use_cuda_graph(None, CUDA, torch.bfloat16)
    assert not use_cuda_graph(None, CPU, torch.float32)
    assert not use_cuda_graph(None, CUDA, torch.float16)
    assert not use_cuda_graph(False, CUDA, torch.bfloat16)


def test_asking_for_a_cuda_graph_where_it_cannot_work_names_the_key_and_the_obstacles():
    with pytest.raises(MateffnetError, match=r"train.cuda_graph: true needs train.device cuda, train.precision other"):
        use_cuda_graph(True, CPU, torch.float16)
    assert use_cuda_graph(True, CUDA, torch.bfloat16)


def test_compile_auto_means_on_cuda_unless_deterministic_and_true_or_false_as_asked():
    assert use_compile("auto", CUDA, deterministic=False)
    assert not use_compile("auto", CUDA, deterministic=True)
    assert not use_compile("auto", CPU, deterministic=False)
    assert use_compile(True, CPU, deterministic=True)
    assert not use_compile(False, CUDA, deterministic=False)


def _failing_compile(net, **options):
    """What torch.compile returns when the compiler breaks: a callable that raises at its first call (after a
    forward pass that updated the BatchNorm statistics, as a failure in the backward pass would)."""
    def compiled(*args, **kwargs):
        net(*args, **kwargs)
        raise RuntimeError("simulated compiler failure\n(more lines)")
    return compiled


def _tiny_run(compiled: bool, device="cpu", graphed=False, steps=3, tuned=False):
    torch.manual_seed(0)
    model = StreamNet(5, backbone="resnet18", pretrained=None, num_segments=2, input_size=32, embed_dim=16,
                      dropout=0.5).to(device)
    optimizer, scheduler = make_optimizer(model, TrainConfig(epochs=2, lr=0.05), steps_per_epoch=4)
    reports = []
    step = make_train_step(model, optimizer, scheduler, options=StepOptions(clip_grad_norm=1.0), graphed=graphed,
                           compiled=compiled, report=reports.append, tuned=tuned)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        clips = torch.randint(0, 256, (4, 2, 3, 32, 32), generator=generator, dtype=torch.uint8).to(device)
        losses.append(step(clips, torch.randint(0, 5, (4,), generator=generator).to(device)))
    return torch.stack(losses).cpu(), {k: v.cpu() for k, v in model.state_dict().items()}, step, reports


def test_when_compiling_fails_the_step_says_so_once_and_trains_exactly_like_the_eager_step(monkeypatch, capsys):
    eager = _tiny_run(compiled=False)
    monkeypatch.setattr(step_module.torch, "compile", _failing_compile)
    fallback = _tiny_run(compiled=True)
    assert capsys.readouterr().err.count("note: torch.compile of the training step failed (simulated compiler failure)") == 1
    assert fallback[2].kind == "eager" and fallback[3] == ["training step: eager"]
    assert torch.equal(fallback[0], eager[0])
    for key in eager[1]:  # the failed pass's BatchNorm update and RNG draws were undone
        assert torch.equal(fallback[1][key], eager[1][key]), key


@pytest.mark.parametrize("tuned", [False, True])
def test_the_compiled_step_hands_inductor_the_tuning_options_only_when_tuned_and_says_so(monkeypatch, tuned):
    asked = []

    def recording_compile(net, options):  # compiles nothing: the step then trains as the eager one
        asked.append(options)
        return net

    monkeypatch.setattr(step_module.torch, "compile", recording_compile)
    model = StreamNet(4, backbone="resnet18", pretrained=None, num_segments=2, input_size=32, embed_dim=16)
    optimizer, scheduler = make_optimizer(model, TrainConfig(epochs=1), steps_per_epoch=2)
    reports = []
    step = make_train_step(model, optimizer, scheduler, compiled=True, report=reports.append, tuned=tuned)
    step(torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 3]))
    expected = {**step_module.COMPILE_OPTIONS, **(step_module.TUNING_OPTIONS if tuned else {})}
    assert asked == [expected] and asked[0]["fallback_random"]
    assert all(hasattr(torch._inductor.config, key) for key in expected)  # names this torch's inductor knows
    assert asked[0].get("coordinate_descent_tuning", False) is tuned
    assert reports[0].startswith("training step: compiled, kernels tuned (" if tuned else "training step: compiled (")


@pytest.mark.skipif(shutil.which("g++") is None or not torch._dynamo.is_dynamo_supported(),
                    reason="needs torch.compile on this Python and g++ for inductor's CPU kernels")
def test_on_the_cpu_the_tuned_compiled_step_trains_like_the_eager_step():
    eager, tuned = _tiny_run(compiled=False), _tiny_run(compiled=True, tuned=True)
    assert tuned[2].kind == "compiled" and tuned[3][0].startswith("training step: compiled, kernels tuned (")
    torch.testing.assert_close(tuned[0], eager[0], rtol=1e-4, atol=1e-5)
    for key in eager[1]:  # weights, BatchNorm statistics; dropout drew the eager step's masks
        torch.testing.assert_close(tuned[1][key], eager[1][key], rtol=1e-4, atol=1e-5, msg=key)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graphed_step_trains_like_the_eager_step_and_runs_other_shapes_eagerly(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    batches = _batches((4, 4, 4, 3, 4, 4))
    eager, graphed = _run(batches, graphed=False), _run(batches, graphed=True)
    assert graphed[2].graph is not None
    _assert_same_training(graphed, eager, rtol=1e-4, atol=1e-5)


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
    _assert_same_training(fallback, eager, rtol=1e-4, atol=1e-5)


# On the GPU: the compiled + graphed step (the default there) against the eager step. The model is the
# tests' small stream (ResNet-18 at 32 px, as in test_train.py's small_config), with BatchNorm training
# and dropout, so that BN statistics and dropout masks are part of what must match.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# 64 px, not 32: ResNet-18's last stage must not see 1x1 maps, on which cuDNN's gradients come back contiguous
# where inductor planned channels_last (the compile then fails over to the uncompiled step, by design)
CUDA_SIZE = 64


def _cuda_batches(count=5, size=8):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (size, 2, 3, CUDA_SIZE, CUDA_SIZE), generator=generator, dtype=torch.uint8).cuda(),
             torch.randint(0, 4, (size,), generator=generator).cuda()) for _ in range(count)]


def _small_stream():
    torch.manual_seed(0)
    model = StreamNet(4, backbone="resnet18", pretrained=None, num_segments=2, input_size=CUDA_SIZE, embed_dim=32,
                      dropout=0.3).cuda()
    return model.use_channels_last()


def _train_on(batches, precision=torch.float32, graphed=False, compiled=False, ddp=False, dropout_seed=0, tuned=False):
    """(losses, state dict incl. BN statistics, the step, the initial state) after training a fresh model on `batches`."""
    model = _small_stream()
    initial = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    optimizer, scheduler = make_optimizer(model, TrainConfig(lr=0.05, weight_decay=0.0, schedule="constant"), 4)
    net = data_parallel(model, CUDA_0) if ddp else model
    step = make_train_step(net, optimizer, scheduler, options=StepOptions(precision, 0.0, 1.0), graphed=graphed,
                           compiled=compiled, tuned=tuned)
    torch.cuda.manual_seed(dropout_seed)
    losses = torch.stack([step(clips, labels) for clips, labels in batches]).cpu()
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    return losses, state, step, initial


def _distance(run, reference) -> float:
    """How far `run`'s weights ended from `reference`'s, relative to how far training moved `reference`'s
    (all learnable tensors as one vector; BatchNorm statistics are compared on their own)."""
    initial = reference[3]
    keys = [k for k in reference[1] if "running_" not in k and "num_batches" not in k]
    flat = {name: torch.cat([state[k].flatten() for k in keys]) for name, state in
            (("run", run[1]), ("reference", reference[1]), ("initial", initial))}
    return ((flat["run"] - flat["reference"]).norm() / (flat["reference"] - flat["initial"]).norm()).item()


def _assert_same_training(run, reference, rtol=2e-3, atol=2e-4):
    """Losses, weights, BatchNorm statistics and their counters of two runs (`_run` or `_train_on`) within tolerance:
    BatchNorm untouched by a capture's warm-up passes."""
    torch.testing.assert_close(run[0], reference[0], rtol=rtol, atol=atol)
    for key in reference[1]:  # weights, BatchNorm statistics and their counters
        torch.testing.assert_close(run[1][key], reference[1][key], rtol=rtol, atol=atol, msg=key)


@needs_cuda
def test_the_compiled_graphed_step_gives_the_eager_steps_losses_weights_bn_statistics_and_dropout(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    batches = _cuda_batches()
    eager, other_masks = _train_on(batches), _train_on(batches, dropout_seed=1)
    fast = _train_on(batches, graphed=True, compiled=True)
    assert fast[2].kind == "compiled + CUDA graph" and fast[2].setup_seconds > 0
    print(f"fp32: compiled + graph vs eager {_distance(fast, eager):.2e}; other dropout masks {_distance(other_masks, eager):.2e}")
    _assert_same_training(fast, eager)
    assert _distance(other_masks, eager) > 20 * _distance(fast, eager)  # the tolerance tells dropout masks apart


@needs_cuda
@pytest.mark.parametrize("tuned", [False, True])
def test_in_bf16_the_compiled_graphed_step_stays_within_rounding_of_the_eager_step(tuned):
    batches = _cuda_batches()
    eager, other_masks = _train_on(batches, torch.bfloat16), _train_on(batches, torch.bfloat16, dropout_seed=1)
    fast = _train_on(batches, torch.bfloat16, graphed=True, compiled=True, tuned=tuned)
    assert fast[2].kind == "compiled + CUDA graph"
    fast_distance, masks_distance = _distance(fast, eager), _distance(other_masks, eager)
    print(f"bf16: losses {fast[0].tolist()} vs {eager[0].tolist()}; weights {fast_distance:.2e} "
          f"(other dropout masks {masks_distance:.2e})")
    torch.testing.assert_close(fast[0], eager[0], rtol=3e-2, atol=1e-3)
    assert fast_distance < 0.25 * masks_distance
    for key in eager[1]:
        if "num_batches_tracked" in key:  # no warm-up or capture pass counted in BatchNorm
            assert torch.equal(fast[1][key], eager[1][key]), key


@needs_cuda
def test_when_capturing_fails_the_step_says_so_and_trains_compiled_like_the_eager_step(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    batches = _cuda_batches()
    eager = _train_on(batches)
    forward_backward = TrainStep.forward_backward

    def synchronizes_while_capturing(self, clips, labels):  # an operation a CUDA graph cannot hold
        if torch.cuda.is_current_stream_capturing():
            torch.cuda.synchronize()
        return forward_backward(self, clips, labels)

    monkeypatch.setattr(TrainStep, "forward_backward", synchronizes_while_capturing)
    fallback = _train_on(batches, graphed=True, compiled=True)
    assert fallback[2].kind == "compiled" and fallback[2].graph is None
    assert capsys.readouterr().err.count("capturing the training step as a CUDA graph failed") == 1
    _assert_same_training(fallback, eager)  # dropout still draws from a working generator, the same masks


@needs_cuda
def test_when_compiling_fails_the_graphed_step_replays_the_eager_graph(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    batches = _cuda_batches(3)
    graph_only = _train_on(batches, graphed=True)
    monkeypatch.setattr(step_module.torch, "compile", _failing_compile)
    fallback = _train_on(batches, graphed=True, compiled=True)
    assert fallback[2].kind == "CUDA graph"
    assert "training with the CUDA-graph step instead" in capsys.readouterr().err
    _assert_same_training(fallback, graph_only, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("cuda_graph, kind", [(False, "compiled"), (None, "compiled + CUDA graph")])
def test_ddp_with_one_process_gives_the_weights_of_the_step_without_ddp(monkeypatch, cuda_graph, kind):
    """null (the default): DDP built on the capture stream lets the step be captured; false: compiled only."""
    import os

    import torch.distributed as dist

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    batches = _cuda_batches()
    eager = _train_on(batches)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{29400 + os.getpid() % 1000}", rank=0, world_size=1)
    try:
        graphed = use_cuda_graph(cuda_graph, CUDA, torch.float32)
        ddp = _train_on(batches, graphed=graphed, compiled=use_compile("auto", CUDA, deterministic=False), ddp=True)
    finally:
        dist.destroy_process_group()
    assert ddp[2].kind == kind
    _assert_same_training(ddp, eager)
