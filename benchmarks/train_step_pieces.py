"""What each piece of the training step buys: one batch size, both streams, piece by piece (issue 14).

    python benchmarks/train_step_pieces.py --batch 32

Rows: eager; CUDA graph of the eager step; torch.compile without and with the graph (the default);
fused SGD and scaled_dot_product_attention on top of the graph; torch.compile's own
mode="reduce-overhead" (cudagraph trees); DistributedDataParallel with one process (eager, graph,
compiled, compiled + graph); the timm peer rows. Then how far the compiled + graphed step's losses,
weights and BatchNorm statistics land from the eager step's after a few bf16 steps (beside two eager
runs, and beside an eager run with other dropout masks), and the GPU kernels that take the time.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import make_peer, measure, repeat  # noqa: E402

from mateffnet.config import TrainConfig  # noqa: E402
from mateffnet.engine.step import StepOptions, make_train_step  # noqa: E402
from mateffnet.engine.build import make_optimizer, parameter_groups  # noqa: E402
from mateffnet.engine.distributed import data_parallel  # noqa: E402
from mateffnet.models import StreamNet  # noqa: E402
from mateffnet.models.attention import MultiHeadSelfAttention  # noqa: E402

STARTED = time.perf_counter()


def sdpa_forward(self, tokens):
    batch, length, dim = tokens.shape
    qkv = self.qkv(tokens).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(batch, length, dim)
    attended = self.proj(attended)
    return tokens + attended if self.residual else attended


def build(modality, args, graphed=False, compiled=False, fused=False, ddp=False, reduce_overhead=False, seed=0):
    torch.manual_seed(seed)
    model = StreamNet(101, modality=modality, num_segments=8, flow_length=10).cuda()
    model.use_channels_last().train()
    tc = TrainConfig()
    optimizer, scheduler = make_optimizer(model, tc, steps_per_epoch=1000)
    if fused:
        optimizer = torch.optim.SGD(parameter_groups(model, tc.weight_decay), lr=tc.lr, momentum=tc.momentum, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    net = data_parallel(model, torch.device("cuda", 0)) if ddp else model  # as `mateffnet train` builds it
    step = make_train_step(net, optimizer, scheduler, options=StepOptions(torch.bfloat16, 0.0, tc.clip_grad_norm),
                           graphed=graphed, compiled=compiled)
    if reduce_overhead:
        step.forward = torch.compile(net, mode="reduce-overhead")
    return model, step


def row(name, modality, args, **kwargs):
    channels = 3 if modality == "rgb" else 20
    torch.cuda.reset_peak_memory_stats()
    step = None
    try:
        if name.startswith("timm"):
            step = make_peer(channels, compiled="compiled" in name)
            batch = (torch.randn(args.batch * 8, channels, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last),
                     torch.randint(0, 101, (args.batch * 8,), device="cuda"))
            used = ""
        else:
            _, step = build(modality, args, **kwargs)
            batch = (torch.randint(0, 256, (args.batch, 8, channels, 224, 224), dtype=torch.uint8, device="cuda"),
                     torch.randint(0, 101, (args.batch,), device="cuda"))
        (rate,), first = measure(step, repeat(*batch), args.seconds)
        used = getattr(step, "kind", "")
        rate *= args.batch
        print(f"| {modality} | {name} | {used} | {rate:.1f} | {rate * 8:.0f} | {torch.cuda.max_memory_allocated() / 2**30:.1f} | "
              f"{first:.1f} | {time.perf_counter() - STARTED:.0f} |", flush=True)
        return rate
    except Exception as error:  # noqa: BLE001 - one failing variant must not end the exploration
        print(f"| {modality} | {name} | failed: {type(error).__name__}: {str(error).splitlines()[0][:150] if str(error) else ''} | | | | | |", flush=True)
    finally:
        del step
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()


def trajectory(modality, args, steps=5, seed=0, **kwargs):
    """(losses, state) after `steps` steps on fixed random batches from one initialisation."""
    channels = 3 if modality == "rgb" else 20
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 256, (args.batch, 8, channels, 224, 224), generator=generator, dtype=torch.uint8).cuda(),
                torch.randint(0, 101, (args.batch,), generator=generator).cuda()) for _ in range(steps)]
    model, step = build(modality, args, **kwargs)
    torch.cuda.manual_seed(seed)  # dropout masks
    losses = torch.stack([step(*b) for b in batches]).cpu()
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    kind = step.kind
    del step, model
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()
    return losses, state, kind


def compare(name, one, ref, initial):
    loss = ((one[0] - ref[0]).abs() / ref[0].abs()).max().item()
    weights = [k for k in ref[1] if "running" not in k and "num_batches" not in k]
    change = max((ref[1][k] - initial[k]).abs().max().item() for k in weights)
    diff = max((one[1][k] - ref[1][k]).abs().max().item() for k in weights)
    bn = max(((one[1][k] - ref[1][k]).abs() / (ref[1][k].abs() + 1e-3)).max().item() for k in ref[1] if "running" in k)
    print(f"| {name} ({one[2]}) | {loss:.2e} | {diff:.2e} | {diff / change:.3f} | {bn:.2e} |", flush=True)


def profile(modality, args):
    _, step = build(modality, args, compiled=True)
    channels = 3 if modality == "rgb" else 20
    batch = (torch.randint(0, 256, (args.batch, 8, channels, 224, 224), dtype=torch.uint8, device="cuda"),
             torch.randint(0, 101, (args.batch,), device="cuda"))
    for _ in range(3):
        step(*batch)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(*batch)
        torch.cuda.synchronize()
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(events.table(sort_by=key, row_limit=25, max_name_column_width=70))
            break
        except Exception:  # noqa: BLE001 - the sort key's name changed between releases
            continue
    del step
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def numerics(modality, args):
    torch.manual_seed(0)
    initial = {k: v.float().clone() for k, v in StreamNet(101, modality=modality, num_segments=8, flow_length=10).state_dict().items()}
    eager = trajectory(modality, args)
    print("| run vs eager | loss | weights | ÷ update | BN stats (rel) |")
    print("|---|---:|---:|---:|---:|")
    compare(f"{modality} eager again", trajectory(modality, args), eager, initial)
    compare(f"{modality} eager, other dropout masks", trajectory(modality, args, seed=7), eager, initial)
    compare(f"{modality} graph only", trajectory(modality, args, graphed=True), eager, initial)
    compare(f"{modality} compiled + graph", trajectory(modality, args, graphed=True, compiled=True), eager, initial)
    print("| stream | variant | step used | clips/s | frames/s | peak GiB | first step s | elapsed s |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--streams", nargs="+", default=["rgb", "flow"])
    parser.add_argument("--budget", type=float, default=200.0, help="skip optional rows after this many seconds")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch} clips × 8 frames")
    print("same training? after 5 bf16 steps on fixed batches (dropout 0.2, BN train, clip 40): max relative loss "
          "difference, max |weight difference|, its ratio to the eager run's largest weight change, BN statistics\n")
    print("| stream | variant | step used | clips/s | frames/s | peak GiB | first step s | elapsed s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for modality in args.streams:
        rgb = modality == "rgb"
        row("compiled + graph (default)", modality, args, graphed=True, compiled=True)
        row("compiled, no graph", modality, args, compiled=True)
        row("eager", modality, args)
        row("graph only", modality, args, graphed=True)
        row("timm eager", modality, args)
        row("timm compiled", modality, args)
        if rgb:
            row("graph only + fused SGD", modality, args, graphed=True, fused=True)
            original = MultiHeadSelfAttention.forward
            MultiHeadSelfAttention.forward = sdpa_forward
            row("graph only + SDPA", modality, args, graphed=True)
            MultiHeadSelfAttention.forward = original
            row("compiled + graph + fused SGD", modality, args, graphed=True, compiled=True, fused=True)
            row("DDP(1) eager", modality, args, ddp=True)
            row("DDP(1) compiled + graph", modality, args, ddp=True, graphed=True, compiled=True)
            row("DDP(1) graph only", modality, args, ddp=True, graphed=True)
        numerics(modality, args)
    print()
    profile("rgb", args)
    if time.perf_counter() - STARTED < args.budget:
        print("| stream | variant | step used | clips/s | frames/s | peak GiB | first step s | elapsed s |")
        row("compile mode=reduce-overhead (eager update)", "rgb", args, reduce_overhead=True)
        row("DDP(1) compiled, no graph", "rgb", args, ddp=True, compiled=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
