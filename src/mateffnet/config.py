"""The experiment configuration: three dataclasses (data, model, train), read from YAML.

Every key, its type, default, allowed range and meaning is declared once, here; `mateffnet train
--help-config` prints the same table. Unknown keys, keys given twice in one mapping, wrong types and
values outside the allowed set or range are rejected before any work starts (`--dry-run` too), with
one line that names the key, says what is allowed and suggests the closest key for typos. A number
written as `1e-3` (a string to YAML 1.1) is read as the number meant. Paths in `data` are relative
to `data.root` unless absolute.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mateffnet.errors import MateffnetError, error_line
from mateffnet.runtime import DEVICES

# The vocabulary the whole package shares, stated once here (this module imports no torch, so the CLI
# can offer these as choices): the config below, argparse, the model, the reader of annotations and the
# offline job all take their allowed values and defaults from these names.
DATA_FORMATS = ("ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "sthv2", "diving48", "list", "folders")
SPLITS = (1, 2, 3)  # the official splits of UCF101 and HMDB51
MODALITIES = ("rgb", "flow")
FLOW_METHODS = ("tvl1", "farneback", "raft")
ATTENTION_TOKENS = ("segments", "spatiotemporal")
TEMPORAL_ENCODINGS = ("none", "learned", "sinusoidal")  # position of each segment before attention
READOUTS = ("mean", "query")  # how the attended segment tokens become one vector
STEM_INIT_METHODS = ("cross_modality", "timm")
TEST_CROPS = (1, 3, 10)
DEFAULT_BOUND = 20.0  # ±pixels that 0–255 flow storage spans (TSN)
RGB_QUALITY = 90  # JPEG quality of stored RGB frames
FLOW_QUALITY = 95  # JPEG quality of stored flow planes (OpenCV's imwrite default, as denseflow and TSN)
# The TV-L1 schedules `--tvl1` names (parameters of `mateffnet.flow.tvl1_params.TVL1Params`). fast: a fixed
# iteration count for dataset-scale extraction, with no host synchronisation, up to 10x fewer iterations
# than OpenCV's defaults run on real video (where the epsilon rule rarely stops before 300 per warp), at
# about the same accuracy (BENCHMARKS.md); opencv: OpenCV's defaults.
TVL1_SCHEDULES = {"fast": {"epsilon": 0.0, "inner_iterations": 30, "outer_iterations": 1}, "opencv": {}}
INPUT_SIZE_RANGE = (32, 1024)  # crop sides a stream accepts (5 stride-2 stages need >= 32)


@dataclass(frozen=True)
class Range:
    """Allowed values of a number (each element of a list): low <= v (low < v if `open_low`), v <= high
    (v < high if `open_high`); None = unbounded."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def admits(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


POSITIVE = Range(low=1)
ABOVE_ZERO = Range(low=0, open_low=True)
AT_LEAST_ZERO = Range(low=0)
FRACTION = Range(low=0, high=1, open_high=True)


def opt(default, help: str, range: Range | None = None):
    """A config field with its default, one line of help (shown by `describe_schema`) and, for a
    number, its allowed range (checked when the config is read)."""
    metadata = {"help": help, "range": range}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    root: str = opt(".", 'folder that the relative paths below are relative to')
    format: str = opt("folders", 'annotation format: ucf101 | hmdb51 | kinetics400 | kinetics600 | kinetics700 | sthv2 | diving48 | list | folders')
    store: str = opt("store", 'folder of packed videos written by `mateffnet prepare`')
    annotations: str | None = opt(None, 'split-file folder (ucf101, hmdb51), CSV or CSV folder (kinetics*), JSON folder (sthv2, diving48), train list (list)')
    val_annotations: str | None = opt(None, 'list format only: the validation/test list file')
    split: int = opt(1, 'official split 1–3 (ucf101, hmdb51)')
    workers: int | None = opt(None, 'DataLoader worker processes per GPU process (null: 3/4 of its cores less one; '
                                    'with GPU decoding 4, or 6 for nvCOMP flow)', AT_LEAST_ZERO)
    decode: str = opt("auto", 'where images are decoded: auto = flow stored as LZ4/zstd on the GPU (nvCOMP, if '
                              'installed), the rest by CPU loader workers | cpu | gpu (nvJPEG and nvCOMP, for few cores per GPU)')
    classes: str | None = opt(None, 'file of class names, one a line in label order (list and folders formats)')
    videos: str | None = opt(None, 'source video folder; needed by format "folders" (video ids are paths under it)')
    train_crop: str = opt("random", 'random (the paper: random crops of 7/8 of the short side) | multiscale (TSN)')
    scales: list[float] = opt([1.0, 0.875, 0.75, 0.66], 'multiscale crop: crop sides as fractions of the short side',
                              Range(low=0, high=1, open_low=True))
    flip: bool = opt(True, 'random horizontal flip (x-flow negated for flow stacks)')
    val_segments: int | None = opt(None, 'segments per video when validating during training (None: num_segments)', POSITIVE)
    test_segments: int = opt(25, 'segments per video at test time (TSN: 25)', POSITIVE)
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
    num_segments: int = opt(8, 'T segments per clip during training (TSN sampling)', POSITIVE)
    flow_length: int = opt(10, 'L flow fields stacked per segment (2L input channels)', POSITIVE)
    attention: bool = opt(True, "the 2-head self-attention across segments (false: the paper's baseline)")
    attention_tokens: str = opt("segments", 'segments | spatiotemporal (T×h×w positions before pooling)')
    heads: int = opt(2, "attention heads (the paper: 2)", POSITIVE)
    embed_dim: int = opt(512, "Fc output and attention width (the paper: 512; a multiple of heads)", POSITIVE)
    attention_residual: bool = opt(False, 'add a residual connection around attention')
    temporal_encoding: str = opt("none", "position of each segment added before attention: none (the paper) | learned | sinusoidal")
    readout: str = opt("mean", "how the segment tokens become one vector: mean (the paper) | query (learned query)")
    dropout: float = opt(0.2, "dropout before the classifier (the paper: 0.2)", FRACTION)
    input_size: int | None = opt(None, "crop size; null: the paper's size for the backbone",
                                 Range(*INPUT_SIZE_RANGE))
    stem_init: str = opt("cross_modality", 'flow stem from RGB weights: cross_modality (TSN) | timm')


@dataclass
class TrainConfig:
    epochs: int = opt(50, "training epochs (the paper: ~50)", POSITIVE)
    batch_size: int = opt(16, 'GLOBAL clips per step, split evenly across processes (GPUs)', POSITIVE)
    lr: float = opt(0.01, 'for the global batch above; not rescaled automatically', ABOVE_ZERO)
    momentum: float = opt(0.9, "SGD momentum", FRACTION)
    weight_decay: float = opt(5e-4, "SGD weight decay (TSN: 5e-4; the paper does not say)", AT_LEAST_ZERO)
    nesterov: bool = opt(False, "Nesterov momentum")
    schedule: str = opt("cosine", 'cosine | step | constant (per iteration, after warmup)')
    warmup_epochs: float = opt(0.0, 'linear warmup from lr/100', AT_LEAST_ZERO)
    step_epochs: list[int] = opt([20, 40], 'step schedule: multiply by `gamma` here', AT_LEAST_ZERO)
    gamma: float = opt(0.1, "step schedule: factor at each step epoch", ABOVE_ZERO)
    clip_grad_norm: float | None = opt(40.0, 'max gradient L2 norm (TSN: 40 RGB, 20 flow); null disables', ABOVE_ZERO)
    bn: str = opt("train", 'train | partial (TSN partial BN: only the first BN layer updates) | frozen')
    sync_bn: bool = opt(False, 'SyncBatchNorm across GPUs (bn=train only)')
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing", FRACTION)
    precision: str = opt("auto", 'auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16')
    channels_last: bool | None = opt(None, 'channels_last memory format; null: on CUDA only')
    compile: bool | str = opt("auto", 'torch.compile the training step: auto (on CUDA, unless deterministic) | true | false')
    compile_tuning: bool = opt(False, "compiled step: inductor picks its kernels' block sizes by timing (coordinate "
                               "descent) and runs 1x1 convolutions as matmuls; a longer first compile (cached)")
    cuda_graph: bool | None = opt(None, 'replay forward+backward (compiled or not) as a CUDA graph (fixed batch shape); '
                                  'null: on CUDA unless precision is fp16')
    device: str = opt("auto", 'auto | cpu | cuda')
    val_every: int = opt(1, 'validate every N epochs (0: never; the last epoch always)', AT_LEAST_ZERO)
    seed: int = opt(0, "seed for weights init, data order and augmentation")
    deterministic: bool = opt(False, 'deterministic kernels and data order: a resumed run reproduces exactly')
    max_steps_per_epoch: int | None = opt(None, 'cap steps per epoch (smoke tests)', POSITIVE)


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
    "data.test_crops": TEST_CROPS,
    "data.split": SPLITS,
    "model.modality": MODALITIES,
    "model.attention_tokens": ATTENTION_TOKENS,
    "model.temporal_encoding": TEMPORAL_ENCODINGS,
    "model.readout": READOUTS,
    "model.stem_init": STEM_INIT_METHODS,
    "train.schedule": ("cosine", "step", "constant"),
    "train.bn": ("train", "partial", "frozen"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.device": DEVICES,
    "train.compile": ("auto", True, False),
}


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
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as error:
            raise MateffnetError(f"{path}: not valid YAML ({error_line(error)})") from error
        except MateffnetError as error:  # a key given twice
            raise MateffnetError(f"{path}:{error}") from None
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
            values[name] = _check_value(key, value, hint, source, fields[name].metadata.get("range"))
    built = cls(**values)
    if cls is ModelConfig and built.embed_dim % built.heads:
        raise MateffnetError(f"{source}: model.embed_dim ({built.embed_dim}) must be a multiple of model.heads ({built.heads})")
    if cls is TrainConfig and built.compile_tuning and built.compile is False:
        raise MateffnetError(f"{source}: train.compile_tuning: true tunes the compiled step; it needs train.compile auto or true")
    return built


def _check_value(key: str, value, hint, source: str, allowed: Range | None = None):
    value = _coerce(key, value, hint, source)
    if key in CHOICES and value not in CHOICES[key]:
        raise MateffnetError(f"{source}: {key} must be one of {', '.join(map(str, CHOICES[key]))}, got {value!r}")
    if allowed is not None and value is not None:
        for element in value if isinstance(value, list) else [value]:
            if not allowed.admits(element):
                what = "a positive integer" if allowed == POSITIVE else str(allowed)
                raise MateffnetError(f"{source}: {key} must be {what}, got {element!r}")
    return value


def _coerce(key: str, value, hint, source: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for kind in inner[:-1]:  # bool | str (train.compile): the first type the value is
            try:
                return _coerce(key, value, kind, source)
            except MateffnetError:
                pass
        return _coerce(key, value, inner[-1], source)
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
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
    raise MateffnetError(f"{source}: {key} must be {expected}, got {value!r}")


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (a second `train:` section would
    silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise MateffnetError(
                    f"{key_node.start_mark.line + 1}: key {key!r} appears twice in one mapping "
                    f"(first on line {seen[key]}); merge them"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


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
            allowed = f" [{f.metadata['range']}]" if f.metadata.get("range") else ""
            lines.append(f"{key:<26} {type_name:<12} {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip():<24} {f.metadata.get('help', '')}{allowed}")
    return "\n".join(lines)
