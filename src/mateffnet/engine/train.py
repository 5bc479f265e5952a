"""Training one stream: a plain loop you can read top to bottom (torchvision-reference style).

The same function runs on one CPU, one GPU, or N GPUs / nodes under `torchrun` (DDP). `batch_size` in
the config is the GLOBAL batch: each of the N processes takes batch_size / N clips per step, and the
learning rate applies to that global batch, so one config gives the same optimisation on any number of
GPUs. Only rank 0 writes files and prints.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from mateffnet.config import ExperimentConfig, TrainConfig, save_config
from mateffnet.engine import distributed
from mateffnet.engine.build import (build_datasets, build_model, check_batch_split, freeze_bn_parameters, make_eval_loader,
                                    make_optimizer, make_train_loader, resolve_precision, seed_everything, set_bn_mode,
                                    use_channels_last)
from mateffnet.engine.checkpoint import (latest_checkpoint, load_train_state, rng_state, save_best,
                                         save_checkpoint, set_rng_state)
from mateffnet.engine.scoring import collect_scores
from mateffnet.engine.metrics import classification_metrics
from mateffnet.engine.step import StepOptions, make_train_step, use_compile, use_cuda_graph
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_text, output_folder
from mateffnet.models import StreamNet

LOG_EVERY = 10  # steps between progress-bar updates (each one waits for the GPU)


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict] = field(default_factory=list)
    best_top1: float | None = None
    best_epoch: int | None = None


def train(config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
          train_set: Dataset | None = None, val_set: Dataset | None = None,
          class_names: list[str] | None = None, progress: bool = True) -> TrainResult:
    """Train the stream described by `config`, writing checkpoints and logs into `out_dir`.

    Datasets default to the ones `config.data` describes; tests and the demo may pass their own
    (train items: (clip uint8 (T, C, H, W), label); val items: (views (V, T, C, H, W), label)).
    """
    ctx = distributed.setup(config.train.device)
    try:
        if train_set is None:
            train_set, val_set, class_names = build_datasets(config, ctx.device)
        return _train(config, Path(out_dir), resume, train_set, val_set, class_names, progress, ctx)
    finally:
        distributed.teardown(ctx)


def _train(config, out_dir, resume, train_set, val_set, class_names, progress, ctx) -> TrainResult:
    tc: TrainConfig = config.train
    seed_everything(tc.seed + ctx.rank, tc.deterministic)
    check_batch_split(tc, ctx.world_size)
    device = ctx.device
    precision = resolve_precision(tc.precision, device)
    graphed = use_cuda_graph(tc.cuda_graph, device, precision)
    compiled = use_compile(tc.compile, device, tc.deterministic)
    model = build_model(config, class_names).to(device)
    if use_channels_last(tc, device):
        model.use_channels_last()
    if tc.sync_bn and ctx.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    freeze_bn_parameters(model, tc.bn)

    train_loader = make_train_loader(train_set, tc.batch_size // ctx.world_size, config.data.workers, tc.seed, ctx)
    if ctx.is_main:
        print(f"data: {train_loader.describe()}")
    steps_per_epoch = len(train_loader) if tc.max_steps_per_epoch is None else min(len(train_loader), tc.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise MateffnetError(
            f"the training set has {len(train_set)} clips, fewer than one batch of {tc.batch_size // ctx.world_size} per process"
        )
    optimizer, scheduler = make_optimizer(model, tc, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)

    start_epoch, history, best = 0, [], (None, None)
    if resume:
        checkpoint = latest_checkpoint(out_dir)
        if checkpoint is None:
            raise MateffnetError(f"--resume: no checkpoint in {out_dir / 'checkpoints'}; start without --resume")
        _check_same_experiment(config, out_dir)
        state = load_train_state(checkpoint)
        model.load_state_dict(StreamNet.from_pretrained(checkpoint).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history, best = state["epoch"], state["history"], tuple(state["best"])
        rngs = state["rng"]
        set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
        if ctx.is_main:
            print(f"resuming {out_dir} after epoch {start_epoch}/{tc.epochs}")
    elif ctx.is_main:
        output_folder(out_dir)
        save_config(config, out_dir / "config.yaml")

    net = distributed.wrap_model(ctx, model)
    step = make_train_step(net, optimizer, scheduler, scaler, StepOptions(precision, tc.label_smoothing, tc.clip_grad_norm),
                           graphed, compiled, report=tqdm.write if ctx.is_main else None, tuned=tc.compile_tuning)
    val_loader = (make_eval_loader(val_set, tc.batch_size // ctx.world_size, config.data.workers, ctx)
                  if val_set is not None else None)
    board = _tensorboard(out_dir) if ctx.is_main else None

    for epoch in range(start_epoch, tc.epochs):
        row = _train_one_epoch(step, net, model, train_loader, optimizer, tc, epoch, steps_per_epoch, ctx,
                               progress, out_dir)
        is_last = epoch + 1 == tc.epochs
        if val_loader is not None and (is_last or (tc.val_every and (epoch + 1) % tc.val_every == 0)):
            row.update(_validate(model, val_loader, precision, ctx, len(class_names), progress))
            if best[0] is None or row["val_top1"] > best[0]:
                best = (row["val_top1"], epoch + 1)
                if ctx.is_main:
                    save_best(out_dir, _unwrap(model))
        history.append(row)
        rngs = distributed.gather_objects(ctx, rng_state())
        if ctx.is_main:
            state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "history": history, "best": list(best), "rng": rngs}
            save_checkpoint(out_dir, epoch + 1, _unwrap(model), state)
            _write_logs(out_dir, history, board)
            print(_epoch_line(row, tc.epochs))
    if board is not None:
        board.close()
    if ctx.is_main and best[0] is None:
        save_best(out_dir, _unwrap(model))  # no validation set: the final weights are the result
    return TrainResult(out_dir, history, best[0], best[1])


def _train_one_epoch(step_fn, net, model, loader, optimizer, tc, epoch, steps, ctx, progress, out_dir) -> dict:
    loader.set_epoch(epoch)  # the dataset's random crops and positions, the sampler's order
    net.train()
    set_bn_mode(_unwrap(model), tc.bn)
    device = ctx.device
    loss_sum = torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    clips_seen, start = 0, time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not (progress and ctx.is_main),
               leave=False, dynamic_ncols=True)
    for step, (clips, labels) in enumerate(loader):
        if step >= steps:
            break
        loss = step_fn(clips, labels)
        nonfinite |= ~torch.isfinite(loss)
        loss_sum += loss
        clips_seen += len(labels) * ctx.world_size
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            if nonfinite.item():
                _stop_on_nonfinite(epoch, step, out_dir)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            clips_s=f"{clips_seen / elapsed:.1f}")
        bar.update()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    mean_loss = distributed.all_reduce_mean(ctx, loss_sum / steps).item()
    if not math.isfinite(mean_loss):
        _stop_on_nonfinite(epoch, steps - 1, out_dir)
    return {"epoch": epoch + 1, "train_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
            "clips_per_s": clips_seen / elapsed, "epoch_time_s": elapsed}


def _stop_on_nonfinite(epoch: int, step: int, out_dir: Path):
    last = latest_checkpoint(out_dir)
    kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"
    raise MateffnetError(
        f"training loss became NaN/inf in epoch {epoch + 1} by step {step + 1}; stopped, {kept} "
        f"(try a lower train.lr, train.precision=fp32 or train.clip_grad_norm)"
    )


def _validate(model, loader, precision, ctx, num_classes, progress: bool = True) -> dict:
    _, scores, labels = collect_scores(model, loader, ctx, precision, desc="validate", progress=progress)
    metrics = classification_metrics(scores, labels, num_classes)
    loss = float(F.nll_loss(torch.log(torch.from_numpy(scores).clamp_min(1e-12)), torch.from_numpy(labels)))
    return {"val_loss": loss, "val_top1": metrics.top1, "val_top5": metrics.top5, "val_mean_class": metrics.mean_class}


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"{row['clips_per_s']:.1f} clips/s"]
    if "val_top1" in row:
        parts += [f"val top-1 {100 * row['val_top1']:.1f}%", f"top-5 {100 * row['val_top5']:.1f}%",
                  f"mean class {100 * row['val_mean_class']:.1f}%"]
    return " | ".join(parts)


def _write_logs(out_dir: Path, history: list[dict], board) -> None:
    columns = ["epoch", "train_loss", "lr", "clips_per_s", "epoch_time_s", "val_loss", "val_top1", "val_top5", "val_mean_class"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "metrics.csv", buffer.getvalue())
    from mateffnet.viz.plots import plot_training_curves

    plot_training_curves(history, out_dir / "curves.png")
    if board is not None:
        row = history[-1]
        for key, value in row.items():
            if key != "epoch" and value is not None:
                board.add_scalar(key, value, row["epoch"])
        board.flush()


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None  # tensorboard is optional: pip install "mateffnet[tensorboard]"
    return SummaryWriter(str(out_dir / "tensorboard"))


def _check_same_experiment(config: ExperimentConfig, out_dir: Path) -> None:
    from mateffnet.config import load_config

    saved_path = out_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = load_config(saved_path)
    if saved.model != config.model:
        raise MateffnetError(f"--resume: the model section differs from the one the run in {out_dir} started with ({saved_path})")
    changed = [k for k, v in vars(config.train).items() if getattr(saved.train, k) != v]
    if changed:
        print(f"note: train.{', train.'.join(changed)} differ from {saved_path}; optimizer and schedule state "
              f"continue from the checkpoint")


def _unwrap(model):
    return getattr(model, "module", model)
