"""`mateffnet train --dry-run`: check a configuration and print what a run would do, reading no video."""

from __future__ import annotations

from pathlib import Path

from mateffnet.config import ExperimentConfig
from mateffnet.data.dataset import locate_video
from mateffnet.engine.build import (build_model, check_batch_split, input_size, load_split, resolve_precision,
                                    use_channels_last)
from mateffnet.engine.step import use_compile, use_cuda_graph
from mateffnet.errors import MateffnetError
from mateffnet.runtime import resolve_device, torchrun_env


def describe_plan(config: ExperimentConfig, out_dir: Path) -> str:
    data, model_cfg, tc = config.data, config.model, config.train
    pretrained = model_cfg.pretrained
    if pretrained not in (None, "imagenet", "lite0-pypi") and not Path(pretrained).is_file():
        raise MateffnetError(f"model.pretrained: weights file not found: {pretrained}")
    class_names, train_items, eval_items = load_split(data)
    model = build_model(config, class_names, pretrained=False)
    store = data.path(data.store)
    prepared = sum(locate_video(store, item.video_id) is not None for item in train_items) if store.is_dir() else 0
    prepared_eval = (sum(locate_video(store, item.video_id) is not None for item in eval_items)
                     if eval_items and store.is_dir() else 0)
    world = torchrun_env().world_size
    check_batch_split(tc, world)
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    graphed = use_cuda_graph(tc.cuda_graph, device, precision)
    compiled = use_compile(tc.compile, device, tc.deterministic)
    params = sum(p.numel() for p in model.parameters())
    steps = prepared // tc.batch_size
    lines = [
        f"run        {config.name} → {out_dir}",
        f"model      {model_cfg.backbone} {model_cfg.modality} stream, {model.config.in_chans} input channels, "
        f"{input_size(config)}×{input_size(config)}, T={model_cfg.num_segments}"
        + (f", L={model_cfg.flow_length}" if model_cfg.modality == "flow" else "")
        + f", attention {'on' if model_cfg.attention else 'off'} ({model_cfg.heads} heads, {model_cfg.embed_dim}-d), "
        + (f"temporal encoding {model_cfg.temporal_encoding}, " if model_cfg.temporal_encoding != "none" else "")
        + (f"readout {model_cfg.readout}, " if model_cfg.readout != "mean" else "")
        + f"{params / 1e6:.2f} M parameters, {len(class_names)} classes",
        f"init       {pretrained or 'random'}" + (f" (flow stem: {model_cfg.stem_init})" if model_cfg.modality == "flow" else ""),
        f"data       {data.format}" + (f" split {data.split}" if data.format in ("ucf101", "hmdb51") else "")
        + f": {len(train_items)} training videos listed, {prepared} prepared in {store}"
        + (f"; {len(eval_items)} test videos listed, {prepared_eval} prepared" if eval_items else "; no validation set"),
        f"optimiser  SGD lr {tc.lr} (global batch {tc.batch_size} = {world} process(es) × {tc.batch_size // world}), "
        f"momentum {tc.momentum}, weight decay {tc.weight_decay}, {tc.schedule} schedule"
        + (f" after {tc.warmup_epochs} warmup epochs" if tc.warmup_epochs else "")
        + f", clip {tc.clip_grad_norm}, BN {tc.bn}",
        f"schedule   {tc.epochs} epochs × {steps} steps"
        + (f" (capped at {tc.max_steps_per_epoch})" if tc.max_steps_per_epoch else "")
        + f", validation every {tc.val_every} epoch(s) with {data.val_segments or model_cfg.num_segments} segments × 1 crop",
        f"device     {device}, {str(precision).replace('torch.', '')}"
        + (", channels_last" if use_channels_last(tc, device) else "")
        + (", torch.compile" + (" (kernels tuned)" if tc.compile_tuning else "") if compiled else "")
        + (", CUDA graph" if graphed else "")
        + (", deterministic" if tc.deterministic else ""),
    ]
    if prepared == 0:
        lines.append(f"warning    no training video is prepared in {store}: run `mateffnet prepare ... --out {store}` first")
    return "\n".join(lines)
