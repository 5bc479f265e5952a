"""One optimisation step of a stream: forward, loss, backward, gradient clipping, SGD, learning-rate schedule.

`TrainStep` runs it eagerly, or with the forward pass (and through AOTAutograd the backward pass) compiled
by `torch.compile`. `GraphedTrainStep` captures the forward and backward passes of the first batch, eager
or compiled, as one CUDA graph and replays that graph for every later batch of the same shape: an
EfficientNet-B0 step is about 3,300 ATen operations (fewer, fused kernels once compiled), mostly small,
and issuing them one by one from Python can take longer than the GPU takes to run them. Clipping, the
optimiser and the schedule stay eager (a handful of fused launches), so they behave exactly as in the
eager step.

The compiled step draws dropout masks with eager's random kernels (inductor's `fallback_random`), so with
the same seed it drops the same units as the eager step. Whatever fails while compiling or capturing, the
step says so once on stderr and trains with the next best step: compiled + graph → compiled (no graph) or
graph (not compiled) → eager. Warm-up and compile passes are undone (BatchNorm statistics, RNG, gradients),
so they count in nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mateffnet.errors import MateffnetError, error_line

WARMUP_PASSES = 3  # eager passes on a side stream before capture, as PyTorch's CUDA-graph notes advise
DDP_WARMUP_PASSES = 11  # DDP needs 11 eager iterations before its backward can be captured (CUDA-graph notes)
COMPILE_OPTIONS = {"fallback_random": True}  # dropout from eager's RNG kernels: the eager step's masks
# train.compile_tuning: inductor times block sizes around each fused kernel's heuristic ones (coordinate
# descent) and lowers 1x1 convolutions to matmuls; slower to compile, the kernels picked by timing
TUNING_OPTIONS = {"coordinate_descent_tuning": True, "conv_1x1_as_mm": True}


@dataclass
class StepOptions:
    precision: torch.dtype = torch.float32
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None


class TrainStep:
    """step(clips, labels) → the batch's loss (a detached 0-d tensor on the device; no host sync).

    `compiled`: the forward and backward passes run through `torch.compile(net)`; the first call compiles
    (an extra pass, undone); `tuned`: with TUNING_OPTIONS too. `report` is called once with a line saying which
    step trains and how long compiling / capturing took.
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None,
                 scaler: torch.amp.GradScaler | None = None, options: StepOptions | None = None,
                 compiled: bool = False, report: Callable[[str], None] | None = None, tuned: bool = False):
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(enabled=False)
        self.options = options or StepOptions()
        self.device_type = next(net.parameters()).device.type
        self.compiled, self.tuned = compiled, tuned
        inductor = {**COMPILE_OPTIONS, **(TUNING_OPTIONS if tuned else {})}
        self.forward = torch.compile(net, options=inductor) if compiled else net
        self.report = report
        self.setup_seconds: float | None = None  # compile / capture time, once the first call has run

    @property
    def kind(self) -> str:
        return "compiled" if self.compiled else "eager"

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.setup_seconds is None:
            started = time.perf_counter()
            if self.compiled:
                with _Undo(self):
                    self._warm_up(clips, labels, 1)
            self._ready(started)
        loss = self.forward_backward(clips, labels)
        self.update()
        return loss

    def forward_backward(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        precision = self.options.precision
        # no weight-cast cache: a graph captured inside autocast must not keep casts made outside it
        with torch.autocast(self.device_type, dtype=precision, enabled=precision != torch.float32, cache_enabled=False):
            logits = self.forward(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.options.label_smoothing)
        self.scaler.scale(loss).backward()
        return loss.detach()

    def update(self) -> None:
        if self.options.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.options.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _warm_up(self, clips: torch.Tensor, labels: torch.Tensor, passes: int) -> None:
        """`passes` forward/backward passes; the first compiles. If compiling fails: a note, then eager passes."""
        try:
            for _ in range(passes):
                self.forward_backward(clips, labels)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure: train uncompiled rather than not at all
            if not self.compiled:
                raise
            self.compiled, self.forward = False, self.net
            _note(f"torch.compile of the training step failed ({error_line(error)[:200]}); training with the "
                  f"{self._fallback_name()} step instead (train.compile=false skips the attempt)")
            self.optimizer.zero_grad(set_to_none=True)
            for _ in range(passes):
                self.forward_backward(clips, labels)

    def _fallback_name(self) -> str:
        return "eager"

    def _ready(self, started: float) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize()
        self.setup_seconds = time.perf_counter() - started
        if self.report is not None:
            spent = f" ({self.setup_seconds:.1f} s to compile and capture)" if self.kind != "eager" else ""
            tuned = ", kernels tuned" if self.compiled and self.tuned else ""
            self.report(f"training step: {self.kind}{tuned}{spent}")


class GraphedTrainStep(TrainStep):
    """TrainStep whose forward and backward passes replay a CUDA graph (CUDA only, fixed batch shape).

    The graph reads the batch from its own input buffers and writes the loss and the parameters'
    gradients into its own memory (it keeps its activations for itself: about the eager step's peak
    memory, plus its input buffer); a batch of another shape runs without the graph. Without the memory
    for the graph, or if capturing fails, it says so once and trains without the graph.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device_type != "cuda" or self.scaler.is_enabled():
            raise MateffnetError("GraphedTrainStep needs a model on CUDA and no fp16 gradient scaling")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_only = False  # True: no graph (it did not fit or could not be captured)
        self.warmup_passes = DDP_WARMUP_PASSES if _uses_ddp(self.net) else WARMUP_PASSES

    @property
    def kind(self) -> str:
        if self.graph is None:
            return super().kind
        return "compiled + CUDA graph" if self.compiled else "CUDA graph"

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.setup_seconds is None:
            started = time.perf_counter()
            self._capture(clips, labels)
            self._ready(started)
        if self.eager_only or clips.shape != self.static_clips.shape or labels.shape != self.static_labels.shape:
            return self._eager(clips, labels)
        self.static_clips.copy_(clips)
        self.static_labels.copy_(labels)
        self.graph.replay()
        self.update()
        return self.static_loss.clone()  # the graph overwrites static_loss at the next replay

    def _eager(self, clips, labels) -> torch.Tensor:
        loss = self.forward_backward(clips, labels)
        self.update()
        if self.graph is not None:  # the graph's gradient buffers back in place for its next replay
            for parameter, grad in zip(self.parameters(), self.grads):
                parameter.grad = grad
        return loss

    def _fallback_name(self) -> str:
        return "CUDA-graph"

    def _capture(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        undo = _Undo(self)
        ddp = _uses_ddp(self.net)  # DDP: warm up and capture on the stream it was built on (data_parallel)
        side = capture_stream(torch.device("cuda", torch.cuda.current_device())) if ddp else torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            self.static_clips, self.static_labels = clips.clone(), labels.clone()
            with torch.cuda.stream(side):
                # compilation, cuDNN autotuning and lazy allocations happen here, not in the graph
                self._warm_up(self.static_clips, self.static_labels, self.warmup_passes)
        except torch.OutOfMemoryError:
            return self._without_graph(undo, f"no GPU memory for a CUDA graph of the training step at batch {len(clips)}")
        torch.cuda.current_stream().wait_stream(side)
        undo.restore()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loader's copy thread keeps using CUDA while this thread captures
            with torch.cuda.graph(graph, stream=side if ddp else None, capture_error_mode="thread_local"):
                self.static_loss = self.forward_backward(self.static_clips, self.static_labels)
        except torch.OutOfMemoryError:
            del graph
            _end_rng_capture()
            return self._without_graph(undo, f"no GPU memory for a CUDA graph of the training step at batch {len(clips)}")
        except RuntimeError as error:
            del graph
            _end_rng_capture()
            return self._without_graph(undo, f"capturing the training step as a CUDA graph failed ({error_line(error)})")
        self.grads = [p.grad for p in self.parameters()]
        self.graph = graph

    def _without_graph(self, undo: "_Undo", reason: str) -> None:
        """At the edge of the GPU's memory, or where a graph cannot be captured: train rather than not at all."""
        self.eager_only = True
        self.static_clips = self.static_labels = None
        torch.cuda.synchronize()
        undo.restore()
        torch.cuda.empty_cache()
        _note(f"{reason}; training {'compiled' if self.compiled else 'eagerly'} without it "
              "(train.cuda_graph=false skips the attempt)")


class _Undo:
    """The model's buffers (BatchNorm statistics) and the RNG as they were; restore() puts them back and
    drops the gradients, so that warm-up passes count in nothing (and backward allocates afresh)."""

    def __init__(self, step: TrainStep):
        self.step = step
        self.buffers = list(step.net.buffers())
        self.saved = [b.clone() for b in self.buffers]
        self.cuda = step.device_type == "cuda"
        self.rng = torch.cuda.get_rng_state() if self.cuda else torch.get_rng_state()

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, value in zip(self.buffers, self.saved):
                buffer.copy_(value)
        (torch.cuda.set_rng_state if self.cuda else torch.set_rng_state)(self.rng)
        self.step.optimizer.zero_grad(set_to_none=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.restore()
        return False


def _end_rng_capture() -> None:
    """A capture that failed leaves the CUDA generator marked as capturing (it raises at the next dropout):
    give it a fresh copy of its state, which is not; _Undo.restore() then resets its seed and offset."""
    generator = torch.cuda.default_generators[torch.cuda.current_device()]
    try:
        generator.graphsafe_set_state(generator.clone_state())
    except (AttributeError, RuntimeError):  # a PyTorch without graph-safe generator states
        pass


_CAPTURE_STREAMS: dict[int, torch.cuda.Stream] = {}


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The one stream per GPU on which DDP is built (`distributed.data_parallel`) and a graphed step of a DDP model
    warms up and is captured: DDP's reducer keeps the gradient accumulators of the stream it was built on, and
    capturing its backward on another stream fails."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _CAPTURE_STREAMS[index]


def _uses_ddp(net: torch.nn.Module) -> bool:
    return isinstance(net, torch.nn.parallel.DistributedDataParallel)


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def make_train_step(net, optimizer, scheduler=None, scaler=None, options: StepOptions | None = None,
                    graphed: bool = False, compiled: bool = False, report=None, tuned: bool = False) -> TrainStep:
    return (GraphedTrainStep if graphed else TrainStep)(net, optimizer, scheduler, scaler, options, compiled, report,
                                                         tuned)


def use_compile(setting: bool | str, device: torch.device, deterministic: bool) -> bool:
    """train.compile: "auto" → on CUDA unless train.deterministic (compiled kernels are autotuned per process,
    so a resumed run could pick others and end a few ulps away); true / false as asked."""
    if setting == "auto":
        return device.type == "cuda" and not deterministic
    return bool(setting)


def use_cuda_graph(setting: bool | None, device: torch.device, precision: torch.dtype) -> bool:
    """train.cuda_graph: null → on CUDA whenever the step can be captured; true where it cannot → error.

    Under torchrun too: DDP is built on the capture stream (`capture_stream`), as PyTorch's CUDA-graph notes
    require (its backward, built on another stream, could not be captured)."""
    obstacles = [reason for reason, present in (
        ("train.device cuda", device.type != "cuda"),
        ("train.precision other than fp16 (its gradient scaler syncs with the host)", precision == torch.float16),
    ) if present]
    if setting is None:
        return not obstacles
    if setting and obstacles:
        raise MateffnetError(f"train.cuda_graph: true needs {', '.join(obstacles)}; set it to null or false")
    return bool(setting)
