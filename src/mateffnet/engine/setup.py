"""From a configuration to the objects a run needs: the class list, the datasets, the model."""

from __future__ import annotations

from pathlib import Path

import torch

from mateffnet.config import DataConfig, ExperimentConfig
from mateffnet.data.annotations import VideoItem, folders, load_annotations, video_list
from mateffnet.data.dataset import VideoDataset
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet
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


def input_size(config: ExperimentConfig) -> int:
    return config.model.input_size or default_input_size(config.model.backbone)


def decodes_on_gpu(data: DataConfig, device: torch.device) -> bool:
    """data.decode: "gpu" (nvJPEG, on CUDA), "cpu", or "auto": CPU workers, which on the 16-core H100 host
    fed both streams faster than nvJPEG did, sharing the GPU with training (BENCHMARKS.md)."""
    return data.decode == "gpu" and device.type == "cuda"


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
    import json

    from mateffnet.data.prepare import STORE_SETTINGS

    path = config.data.path(config.data.store) / STORE_SETTINGS
    if not path.is_file():
        return {}
    settings = json.loads(path.read_text()).get("settings", {})
    made = {"frame_size": settings.get("size")}
    if settings.get("flow_method") not in (None, "none"):
        made.update(flow_method=settings["flow_method"], flow_params=settings.get("flow_params") or None,
                    flow_bound=settings.get("flow_bound", 20.0))
    return made


def build_model(config: ExperimentConfig, class_names: list[str], pretrained: bool = True) -> StreamNet:
    m = config.model
    return StreamNet(
        len(class_names), modality=m.modality, backbone=m.backbone, num_segments=m.num_segments,
        flow_length=m.flow_length, attention=m.attention, attention_tokens=m.attention_tokens, heads=m.heads,
        embed_dim=m.embed_dim, attention_residual=m.attention_residual, temporal_encoding=m.temporal_encoding,
        readout=m.readout, dropout=m.dropout,
        input_size=m.input_size, stem_init=m.stem_init, class_names=list(class_names),
        pretrained=m.pretrained if pretrained else None, **store_settings(config),
    )
