"""The experiment configuration: three dataclasses (data, model, train), read from YAML.

Every key, its type, default and meaning is declared once, here; `mateffnet train --help-config`
prints the same table. Unknown keys, wrong types and values outside the allowed set are rejected before
any work starts, with one line that names the key, says what is allowed and suggests the closest key
for typos. Paths in `data` are relative to `data.root` unless absolute.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mateffnet.errors import MateffnetError

DATA_FORMATS = ("ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "sthv2", "diving48", "list", "folders")


def opt(default, help: str):
    """A config field with its default and one line of help (shown by `describe_schema`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    root: str = opt(".", 'folder that the relative paths below are relative to')
    format: str = opt("folders", 'annotation format: ucf101 | hmdb51 | kinetics400 | kinetics600 | kinetics700 | sthv2 | diving48 | list | folders')
    store: str = opt("store", 'folder of packed videos written by `mateffnet prepare`')
    annotations: str | None = opt(None, 'split-file folder (ucf101, hmdb51), CSV or CSV folder (kinetics*), JSON folder (sthv2, diving48), train list (list)')
    val_annotations: str | None = opt(None, 'list format only: the validation/test list file')
    split: int = opt(1, 'official split 1–3 (ucf101, hmdb51)')
    workers: int | None = opt(None, 'DataLoader worker processes per GPU process (null: 3/4 of its cores less one; 4 with GPU decoding)')
    decode: str = opt("auto", 'where images are decoded: auto = cpu (loader workers) | gpu (nvJPEG; JPEG only, for few cores per GPU)')
    classes: str | None = opt(None, 'file of class names, one a line in label order (list and folders formats)')
    videos: str | None = opt(None, 'source video folder; needed by format "folders" (video ids are paths under it)')
    train_crop: str = opt("random", 'random (the paper: random crops of 7/8 of the short side) | multiscale (TSN)')
    scales: list[float] = opt([1.0, 0.875, 0.75, 0.66], 'multiscale crop: crop sides as fractions of the short side')
    flip: bool = opt(True, 'random horizontal flip (x-flow negated for flow stacks)')
    val_segments: int | None = opt(None, 'segments per video when validating during training (None: num_segments)')
    test_segments: int = opt(25, 'segments per video at test time (TSN: 25)')
    test_crops: int = opt(10, '1 (centre), 3 or 10 (4 corners + centre, and their mirrors)')

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.root).expanduser() / path


@dataclass
class ModelConfig:
    modality: str = opt("rgb", 'rgb | flow')
    backbone: str = opt("efficientnet_b0", 'efficientnet_b0 | resnet18 | resnet34 | resnet50 | tf_efficientnet_lite0 | any timm name')
    pretrained: str | None = opt("imagenet", 'null | imagenet | lite0-pypi | path to a .safetensors/.pth file')
    num_segments: int = opt(8, 'T segments per clip during training (TSN sampling)')
    flow_length: int = opt(10, 'L flow fields stacked per segment (2L input channels)')
    attention: bool = opt(True, "the 2-head self-attention across segments (false: the paper's baseline)")
    attention_tokens: str = opt("segments", 'segments | spatiotemporal (T×h×w positions before pooling)')
    heads: int = opt(2, "attention heads (the paper: 2)")
    embed_dim: int = opt(512, "Fc output and attention width (the paper: 512)")
    attention_residual: bool = opt(False, 'add a residual connection around attention')
    temporal_encoding: str = opt("none", "position of each segment added before attention: none (the paper) | learned | sinusoidal")
    readout: str = opt("mean", "how the segment tokens become one vector: mean (the paper) | query (learned query)")
    dropout: float = opt(0.2, "dropout before the classifier (the paper: 0.2)")
    input_size: int | None = opt(None, "crop size; null: the paper's size for the backbone")
    stem_init: str = opt("cross_modality", 'flow stem from RGB weights: cross_modality (TSN) | timm')


@dataclass
class TrainConfig:
    epochs: int = opt(50, "training epochs (the paper: ~50)")
    batch_size: int = opt(16, 'GLOBAL clips per step, split evenly across processes (GPUs)')
    lr: float = opt(0.01, 'for the global batch above; not rescaled automatically')
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-4, "SGD weight decay (TSN: 5e-4; the paper does not say)")
    nesterov: bool = opt(False, "Nesterov momentum")
    schedule: str = opt("cosine", 'cosine | step | constant (per iteration, after warmup)')
    warmup_epochs: float = opt(0.0, 'linear warmup from lr/100')
    step_epochs: list[int] = opt([20, 40], 'step schedule: multiply by `gamma` here')
    gamma: float = opt(0.1, "step schedule: factor at each step epoch")
    clip_grad_norm: float | None = opt(40.0, 'max gradient L2 norm (TSN: 40 RGB, 20 flow); null disables')
    bn: str = opt("train", 'train | partial (TSN partial BN: only the first BN layer updates) | frozen')
    sync_bn: bool = opt(False, 'SyncBatchNorm across GPUs (bn=train only)')
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")
    precision: str = opt("auto", 'auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16')
    channels_last: bool | None = opt(None, 'channels_last memory format; null: on CUDA only')
    compile: bool = opt(False, 'torch.compile the model')
    cuda_graph: bool | None = opt(None, 'replay forward+backward as a CUDA graph (fixed batch shape); null: on CUDA '
                                  'with one process, no compile, precision not fp16')
    device: str = opt("auto", 'auto | cpu | cuda')
    val_every: int = opt(1, 'validate every N epochs (0: never; the last epoch always)')
    seed: int = opt(0, "seed for weights init, data order and augmentation")
    deterministic: bool = opt(False, 'deterministic kernels and data order: a resumed run reproduces exactly')
    max_steps_per_epoch: int | None = opt(None, 'cap steps per epoch (smoke tests)')


@dataclass
class ExperimentConfig:
    name: str = opt("experiment", "a name for the run (folder names, reports)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "data.format": DATA_FORMATS,
    "data.decode": ("auto", "cpu", "gpu"),
    "data.train_crop": ("random", "multiscale"),
    "data.test_crops": (1, 3, 10),
    "data.split": (1, 2, 3),
    "model.modality": ("rgb", "flow"),
    "model.attention_tokens": ("segments", "spatiotemporal"),
    "model.temporal_encoding": ("none", "learned", "sinusoidal"),
    "model.readout": ("mean", "query"),
    "model.stem_init": ("cross_modality", "timm"),
    "train.schedule": ("cosine", "step", "constant"),
    "train.bn": ("train", "partial", "frozen"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
}
POSITIVE = {"data.test_segments", "model.num_segments", "model.flow_length", "model.heads", "model.embed_dim",
            "train.epochs", "train.batch_size"}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML file (or start from the defaults), apply `key=value` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise MateffnetError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise MateffnetError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
        if not isinstance(data, dict):
            raise MateffnetError(f"{path}: expected a mapping of sections (data, model, train) at the top level")
    return config_from_dict(data, source, overrides)


def config_from_dict(data: dict, source: str = "config", overrides: list[str] = ()) -> ExperimentConfig:
    """Validate a nested dict (as read from YAML) after applying `key=value` overrides to it."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, value = _parse_override(override)
        _set_dotted(data, key, value)
    return _build(ExperimentConfig, data, source, prefix="")


def _build(cls, data: dict, source: str, prefix: str):
    if not isinstance(data, dict):
        raise MateffnetError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise MateffnetError(
                f"{source}: unknown key {prefix}{key}{hint} (allowed in {prefix.rstrip('.') or 'top level'}: "
                f"{', '.join(fields)})"
            )
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value or {}, source, f"{key}.")
        else:
            values[name] = _check_value(key, value, hint, source)
    return cls(**values)


def _check_value(key: str, value, hint, source: str):
    value = _coerce(key, value, hint, source)
    if key in CHOICES and value not in CHOICES[key]:
        raise MateffnetError(f"{source}: {key} must be one of {', '.join(map(str, CHOICES[key]))}, got {value!r}")
    if key in POSITIVE and value < 1:
        raise MateffnetError(f"{source}: {key} must be a positive integer, got {value!r}")
    return value


def _coerce(key: str, value, hint, source: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], source)
    if origin is list:
        if not isinstance(value, list):
            raise MateffnetError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(key, v, args[0], source) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
    raise MateffnetError(f"{source}: {key} must be {expected}, got {value!r}")


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise MateffnetError(f"--set {text!r}: expected key=value, e.g. train.lr=0.005")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise MateffnetError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    from mateffnet.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def describe_schema() -> str:
    """Every key with its type, default and meaning, one per line (`mateffnet train --help-config`)."""
    lines = []
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            type_name = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
            key = f"{section}.{f.name}"
            lines.append(f"{key:<26} {type_name:<12} {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip():<24} {f.metadata.get('help', '')}")
    return "\n".join(lines)
