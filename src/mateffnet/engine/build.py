"""From a configuration to the objects a run needs: the class list, the test videos, the datasets and their
loaders, the model, its optimizer and schedule, the BN mode, the precision, the seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from mateffnet.config import DEFAULT_BOUND, DataConfig, ExperimentConfig, TrainConfig
from mateffnet.data.dataset import VideoDataset
from mateffnet.data.loader import make_loader
from mateffnet.errors import MateffnetError
from mateffnet.io.annotations import VideoItem, folders, load_annotations, video_list
from mateffnet.io.store import STORE_SETTINGS
from mateffnet.models import StreamConfig, StreamNet
from mateffnet.models.backbones import default_input_size

KINETICS_EVAL_SUBSETS = ("val", "validate", "validation", "test")


def load_split(data: DataConfig) -> tuple[list[str], list[VideoItem], list[VideoItem] | None]:
    """(class names, training items, validation/test items or None) that `data` describes."""
    annotations, videos = data.path(data.annotations), data.path(data.videos)
    store = data.path(data.store)
    if data.format == "list":
        if annotations is None:
            raise MateffnetError("data.format list needs data.annotations (the training list file)")
        train = video_list(annotations, videos).items()
        evaluation = video_list(data.path(data.val_annotations), videos).items() if data.val_annotations else None
        top = max(item.label for item in train + (evaluation or []))
        if data.classes is None:
            _check_no_label_gaps(train, top + 1, annotations)
        return class_names(data, top + 1), train, evaluation
    if data.format == "folders":
        if videos is None:
            raise MateffnetError("data.format folders needs data.videos (the folder of class folders of videos)")
        found = folders(videos, data.path(data.classes))
        return found.classes, found.items(), None
    found = load_annotations(videos or store, data.format, annotations, data.split)
    if data.format in ("ucf101", "hmdb51"):
        return found.classes, found.items("train"), found.items("test")
    evaluation = next((found.items(name) for name in KINETICS_EVAL_SUBSETS if name in found.subsets), None)
    return found.classes, found.items("train"), evaluation


def _check_no_label_gaps(train: list[VideoItem], count: int, list_file: Path) -> None:
    """Without a class list the classes are 0..max label: a label with no training video is almost always
    a typo (label 99 in a list of 10 classes) that would silently add classes to the model."""
    unused = sorted(set(range(count)) - {item.label for item in train})
    if unused:
        shown = ", ".join(map(str, unused[:5])) + (f", … ({len(unused) - 5} more)" if len(unused) > 5 else "")
        raise MateffnetError(
            f"{list_file}: labels go up to {count - 1}, but no training video has label {shown}; a label out of "
            f"range? (to train {count} classes anyway, name them in data.classes)"
        )


def class_names(data: DataConfig, count: int) -> list[str]:
    """The names in `data.classes`, or "0", "1", … for `count` classes."""
    if data.classes is None:
        return [str(i) for i in range(count)]
    path = data.path(data.classes)
    if not path.is_file():
        raise MateffnetError(f"data.classes: file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) < count:
        raise MateffnetError(f"{path}: {len(names)} class names, but the lists use labels up to {count - 1}")
    return names


def evaluation_items(data: DataConfig) -> tuple[list[str], list[VideoItem]]:
    """(class names, the videos to test): the split's test list (UCF101, HMDB51), Kinetics' validation
    CSV, the list file `val_annotations` (else `annotations`) names, or every video of class folders."""
    if data.format == "list":
        items = video_list(data.path(data.val_annotations or data.annotations), data.path(data.videos)).items()
        return class_names(data, max(item.label for item in items) + 1), items
    classes, train, evaluation = load_split(data)
    return classes, train if evaluation is None else evaluation


def input_size(config: ExperimentConfig) -> int:
    return config.model.input_size or default_input_size(config.model.backbone)


def decodes_on_gpu(data: DataConfig, device: torch.device) -> bool | str:
    """`VideoDataset(defer_decode=...)` for data.decode: "gpu" (nvJPEG / nvCOMP, on CUDA), "cpu", or "auto" (on
    CUDA): flow stored as LZ4 or zstd on the GPU by nvCOMP where it is installed, everything else by CPU workers,
    which fed RGB faster than nvJPEG sharing the GPU with training did (BENCHMARKS.md)."""
    if device.type != "cuda" or data.decode == "cpu":
        return False
    return True if data.decode == "gpu" else "auto"


def make_dataset(config: ExperimentConfig, items: list[VideoItem], train: bool, device: torch.device,
                 segments: int | None = None, crops: int = 1) -> VideoDataset:
    data, model = config.data, config.model
    return VideoDataset(
        items, data.path(data.store), model.modality, num_segments=segments or model.num_segments,
        flow_length=model.flow_length, train=train, input_size=input_size(config), train_crop=data.train_crop,
        flip=data.flip, num_crops=crops, defer_decode=decodes_on_gpu(data, device), scales=data.scales,
        seed=config.train.seed,
    )


def build_datasets(config: ExperimentConfig, device: torch.device | str = "cpu"):
    """(training set, validation set or None, class names): validation uses `data.val_segments` and 1 crop."""
    device = torch.device(device)
    store = config.data.path(config.data.store)
    if not Path(store).is_dir():
        raise MateffnetError(f"data.store: {store} is not a folder; prepare the videos first (mateffnet prepare ... --out {store})")
    class_names, train_items, eval_items = load_split(config.data)
    train_set = make_dataset(config, train_items, True, device)
    if len(train_set) == 0:
        raise MateffnetError(f"none of the {len(train_items)} training videos is prepared in {store}")
    val_set = None
    if eval_items:
        val_set = make_dataset(config, eval_items, False, device, segments=config.data.val_segments)
        val_set = val_set if len(val_set) else None
    return train_set, val_set, class_names


def store_settings(config: ExperimentConfig) -> dict:
    """How the store's frames and flow were made (its store.json), recorded in the model's config so that
    inference decodes and computes flow the same way; {} when the store has no settings file."""
    path = config.data.path(config.data.store) / STORE_SETTINGS
    if not path.is_file():
        return {}
    settings = json.loads(path.read_text()).get("settings", {})
    made = {"frame_size": settings.get("size")}
    if settings.get("flow_method") not in (None, "none"):
        made.update(flow_method=settings["flow_method"], flow_params=settings.get("flow_params") or None,
                    flow_bound=settings.get("flow_bound", DEFAULT_BOUND))
    return made


def build_model(config: ExperimentConfig, class_names: list[str], pretrained: bool = True) -> StreamNet:
    """The stream `config.model` describes: every model.* key that is also a `StreamConfig` field goes
    there unchanged (`pretrained` only initialises the backbone), plus how the store was made."""
    m = config.model
    stream_fields = {f.name for f in dataclasses.fields(StreamConfig)}
    options = {name: value for name, value in dataclasses.asdict(m).items() if name in stream_fields}
    return StreamNet(len(class_names), class_names=list(class_names), pretrained=m.pretrained if pretrained else None,
                     **options, **store_settings(config))


def check_batch_split(tc: TrainConfig, world_size: int) -> None:
    """train.batch_size is global: each of the processes takes an equal share."""
    if tc.batch_size % world_size:
        raise MateffnetError(f"train.batch_size {tc.batch_size} (global) must be divisible by the {world_size} processes")


def make_train_loader(dataset, batch_size: int, workers: int, seed: int, ctx):
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    return make_loader(dataset, batch_size, ctx.device, drop_last=True, workers=workers, sampler=sampler)


def make_eval_loader(dataset, batch_size: int, workers: int | None, ctx):
    """Each process scores the videos rank, rank + N, …: no padding, so no video is counted twice."""
    sampler = ShardSampler(len(dataset), ctx.rank, ctx.world_size)
    return make_loader(dataset, max(1, batch_size), ctx.device, drop_last=False, workers=workers, sampler=sampler)


class ShardSampler(torch.utils.data.Sampler):
    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig, steps_per_epoch: int):
    """(SGD, its per-step learning-rate schedule) as `tc` describes them."""
    optimizer = torch.optim.SGD(parameter_groups(model, tc.weight_decay), lr=tc.lr, momentum=tc.momentum,
                                nesterov=tc.nesterov)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tc, steps_per_epoch))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only; none on biases and normalisation parameters."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(tc: TrainConfig, steps_per_epoch: int):
    """Learning-rate multiplier per optimisation step: linear warmup, then cosine / step / constant."""
    total = tc.epochs * steps_per_epoch
    warmup = int(tc.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return 0.01 + 0.99 * step / warmup
        if tc.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if tc.schedule == "step":
            epoch = step / steps_per_epoch
            return tc.gamma ** sum(epoch >= boundary for boundary in tc.step_epochs)
        return 1.0

    return factor


def _fixed_norms(model: torch.nn.Module, mode: str) -> list[torch.nn.Module]:
    """train: every BN layer learns. partial (TSN): every BN layer but the first keeps its statistics and
    affine parameters fixed. frozen: all BN layers are fixed."""
    if mode == "train":
        return []
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return norms[1:] if mode == "partial" else norms


def freeze_bn_parameters(model: torch.nn.Module, mode: str) -> None:
    """Once, before the optimizer and DDP see the parameters."""
    for norm in _fixed_norms(model, mode):
        for parameter in norm.parameters():
            parameter.requires_grad_(False)


def set_bn_mode(model: torch.nn.Module, mode: str) -> None:
    """After every model.train(): fixed BN layers use (and keep) their running statistics."""
    for norm in _fixed_norms(model, mode):
        norm.eval()


def use_channels_last(tc: TrainConfig, device: torch.device) -> bool:
    """train.channels_last, or null: on CUDA only."""
    return device.type == "cuda" if tc.channels_last is None else tc.channels_last


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
