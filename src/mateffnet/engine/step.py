"""One optimisation step of a stream: forward, loss, backward, gradient clipping, SGD, learning-rate schedule.

`TrainStep` runs it eagerly. `GraphedTrainStep` captures the forward and backward passes of the first
batch as a CUDA graph and replays that graph for every later batch of the same shape: an EfficientNet-B0
step is about 3,300 ATen operations, mostly small kernels, and at batch 16 issuing them one by one from
Python takes longer than a fast GPU takes to run them (measured in BENCHMARKS.md, "Training").
Clipping, the optimiser and the schedule stay eager (a handful of fused launches), so they behave
exactly as in `TrainStep`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mateffnet.errors import MateffnetError, error_line

WARMUP_PASSES = 3  # eager passes on a side stream before capture, as PyTorch's CUDA-graph notes advise


@dataclass
class StepOptions:
    precision: torch.dtype = torch.float32
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None


class TrainStep:
    """step(clips, labels) → the batch's loss (a detached 0-d tensor on the device; no host sync)."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None,
                 scaler: torch.amp.GradScaler | None = None, options: StepOptions | None = None):
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(enabled=False)
        self.options = options or StepOptions()
        self.device_type = next(net.parameters()).device.type

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.forward_backward(clips, labels)
        self.update()
        return loss

    def forward_backward(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        precision = self.options.precision
        # no weight-cast cache: a graph captured inside autocast must not keep casts made outside it
        with torch.autocast(self.device_type, dtype=precision, enabled=precision != torch.float32, cache_enabled=False):
            logits = self.net(clips)
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


class GraphedTrainStep(TrainStep):
    """TrainStep whose forward and backward passes replay a CUDA graph (CUDA only, fixed batch shape).

    The graph reads the batch from its own input buffers and writes the loss and the parameters'
    gradients into its own memory (it keeps its activations for itself: about the eager step's peak
    memory, plus its input buffer); a batch of another shape runs eagerly. Without the memory for the
    graph, it says so once and trains eagerly.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device_type != "cuda" or self.scaler.is_enabled():
            raise MateffnetError("GraphedTrainStep needs a model on CUDA and no fp16 gradient scaling")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_only = False

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graph is None and not self.eager_only:
            self._capture(clips, labels)
        if self.eager_only or clips.shape != self.static_clips.shape or labels.shape != self.static_labels.shape:
            return self._eager(clips, labels)
        self.static_clips.copy_(clips)
        self.static_labels.copy_(labels)
        self.graph.replay()
        self.update()
        return self.static_loss.clone()  # the graph overwrites static_loss at the next replay

    def _eager(self, clips, labels) -> torch.Tensor:
        loss = super().__call__(clips, labels)
        if self.graph is not None:  # the graph's gradient buffers back in place for its next replay
            for parameter, grad in zip(self.parameters(), self.grads):
                parameter.grad = grad
        return loss

    def _capture(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        buffers = list(self.net.buffers())
        saved, rng = [b.clone() for b in buffers], torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            self.static_clips, self.static_labels = clips.clone(), labels.clone()
            with torch.cuda.stream(side):
                for _ in range(WARMUP_PASSES):  # cuDNN autotuning and lazy allocations happen here, not in the graph
                    self.forward_backward(self.static_clips, self.static_labels)
        except torch.OutOfMemoryError:
            return self._train_eagerly(len(clips), buffers, saved, rng)
        torch.cuda.current_stream().wait_stream(side)
        self._restore(buffers, saved, rng)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loader's copy thread keeps using CUDA while this thread captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.static_loss = self.forward_backward(self.static_clips, self.static_labels)
        except torch.OutOfMemoryError:
            del graph
            return self._train_eagerly(len(clips), buffers, saved, rng)
        except RuntimeError as error:
            raise MateffnetError(f"capturing the training step as a CUDA graph failed ({error_line(error)}); "
                                 f"set train.cuda_graph=false to train eagerly") from error
        self.grads = [p.grad for p in self.parameters()]
        self.graph = graph

    def _restore(self, buffers, saved, rng) -> None:
        """Undo the warm-up passes: they count neither in BatchNorm's statistics nor in dropout's RNG."""
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
        torch.cuda.set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)  # so that backward allocates the gradients in the graph's pool

    def _train_eagerly(self, batch: int, buffers, saved, rng) -> None:
        """The graph holds one more batch than the eager step (its input buffer) and its activations for
        itself: at the edge of the GPU's memory, train eagerly rather than not at all."""
        self.eager_only = True
        self.static_clips = self.static_labels = None
        torch.cuda.synchronize()
        self._restore(buffers, saved, rng)
        torch.cuda.empty_cache()
        print(f"note: no GPU memory for a CUDA graph of the training step at batch {batch}; training eagerly "
              "(train.cuda_graph=false skips the attempt)", file=sys.stderr)


def make_train_step(net, optimizer, scheduler=None, scaler=None, options: StepOptions | None = None,
                    graphed: bool = False) -> TrainStep:
    return (GraphedTrainStep if graphed else TrainStep)(net, optimizer, scheduler, scaler, options)


def use_cuda_graph(setting: bool | None, device: torch.device, precision: torch.dtype, distributed: bool,
                   compiled: bool) -> bool:
    """train.cuda_graph: null → on CUDA whenever the step can be captured; true where it cannot → error."""
    obstacles = [reason for reason, present in (
        ("train.device cuda", device.type != "cuda"),
        ("one process (not DDP)", distributed),
        ("train.compile false", compiled),
        ("train.precision other than fp16 (its gradient scaler syncs with the host)", precision == torch.float16),
    ) if present]
    if setting is None:
        return not obstacles
    if setting and obstacles:
        raise MateffnetError(f"train.cuda_graph: true needs {', '.join(obstacles)}; set it to null or false")
    return bool(setting)
