"""Late fusion of the two streams: a weighted average of their softmax scores.

fused = (w_rgb · softmax(rgb logits) + w_flow · softmax(flow logits)) / (w_rgb + w_flow)

MAT-EffNet averages 1:1 (the default); TSN weights RGB:flow 1:1.5. Either stream may be absent, in
which case the fused score is the present stream's softmax.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from mateffnet.config import MODALITIES
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json
from mateffnet.models.streamnet import CONFIG_FILE, StreamNet, read_stream_config

FUSION_FILE = "fusion.json"


class TwoStreamNet(nn.Module):
    def __init__(self, rgb: StreamNet | None = None, flow: StreamNet | None = None,
                 weights: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        if rgb is None and flow is None:
            raise MateffnetError("TwoStreamNet needs at least one stream (rgb or flow)")
        for name, stream in (("rgb", rgb), ("flow", flow)):
            if stream is not None and stream.config.modality != name:
                raise MateffnetError(f"the {name} stream given is a {stream.config.modality} model")
        if rgb is not None and flow is not None:
            if rgb.config.num_classes != flow.config.num_classes or rgb.config.class_names != flow.config.class_names:
                raise MateffnetError(
                    f"the rgb and flow streams predict different classes ({rgb.config.num_classes} vs "
                    f"{flow.config.num_classes} classes, or different class names)"
                )
        if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
            raise MateffnetError(f"fusion weights must be two non-negative numbers with a positive sum, got {weights}")
        self.rgb, self.flow = rgb, flow
        self.weights = (float(weights[0]), float(weights[1]))

    @property
    def streams(self) -> dict[str, StreamNet]:
        return {name: s for name, s in (("rgb", self.rgb), ("flow", self.flow)) if s is not None}

    @property
    def class_names(self) -> list[str] | None:
        return next(iter(self.streams.values())).config.class_names

    def stream_probabilities(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Softmax scores per stream present and their fusion: {"rgb": …, "flow": …, "fused": …}, each (B, classes)."""
        inputs = {"rgb": rgb, "flow": flow}
        probabilities = {}
        for name, stream in self.streams.items():
            if inputs[name] is None:
                raise MateffnetError(f"the model has a {name} stream but no {name} clips were given")
            probabilities[name] = stream(inputs[name]).float().softmax(dim=-1)
        probabilities["fused"] = fuse_probabilities(probabilities, self.weights)
        return probabilities

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        return self.stream_probabilities(rgb, flow)["fused"]

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for name, stream in self.streams.items():
            stream.save_pretrained(folder / name)
        atomic_write_json(folder / FUSION_FILE, {"weights": {"rgb": self.weights[0], "flow": self.weights[1]}})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu",
                        weights: tuple[float, float] | None = None) -> "TwoStreamNet":
        """Load `folder/rgb` and/or `folder/flow` (at least one), or one stream's own folder; fusion weights from
        fusion.json unless given."""
        folder = Path(folder)
        if not folder.is_dir():
            raise MateffnetError(f"model folder not found: {folder}")
        if (folder / CONFIG_FILE).is_file():  # a single stream's folder, e.g. runs/<name>/best
            stream = StreamNet.from_pretrained(folder, map_location)
            return cls(**{stream.config.modality: stream}, weights=weights or (1.0, 1.0))
        names = [name for name in MODALITIES if (folder / name / CONFIG_FILE).is_file()]
        if not names:
            raise MateffnetError(f"{folder}: no stream found (expected rgb/{CONFIG_FILE} and/or flow/{CONFIG_FILE})")
        # every file is checked before any stream is built: the configs, their modalities and classes, fusion.json
        configs = {name: read_stream_config(folder / name / CONFIG_FILE) for name in names}
        for name, config in configs.items():
            if config.modality != name:
                raise MateffnetError(f"{folder / name / CONFIG_FILE}: a {config.modality} model in the {name}/ folder")
        if len(configs) == 2 and (configs["rgb"].num_classes, configs["rgb"].class_names) != (
                configs["flow"].num_classes, configs["flow"].class_names):
            raise MateffnetError(
                f"{folder}: rgb/{CONFIG_FILE} and flow/{CONFIG_FILE} describe different classes "
                f"({configs['rgb'].num_classes} and {configs['flow'].num_classes}, or other names)"
            )
        if weights is None:
            weights = read_fusion_weights(folder / FUSION_FILE) if (folder / FUSION_FILE).is_file() else (1.0, 1.0)
        streams = {name: StreamNet.from_pretrained(folder / name, map_location) for name in names}
        return cls(streams.get("rgb"), streams.get("flow"), weights)


def read_fusion_weights(path: Path) -> tuple[float, float]:
    """(rgb, flow) from fusion.json `{"weights": {"rgb": w, "flow": w}}`: two non-negative numbers, positive sum."""
    expected = 'expected {"weights": {"rgb": number, "flow": number}} with non-negative numbers of positive sum'
    try:
        stored = json.loads(path.read_text())["weights"]
        weights = (stored["rgb"], stored["flow"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise MateffnetError(f"{path}: malformed fusion file; {expected}") from None
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights) \
            or sum(weights) <= 0:
        raise MateffnetError(f"{path}: fusion weights {list(weights)}; {expected}")
    return float(weights[0]), float(weights[1])


def fuse_probabilities(probabilities: dict[str, torch.Tensor], weights: tuple[float, float]) -> torch.Tensor:
    """Weighted average of the "rgb" and/or "flow" softmax scores present in `probabilities`."""
    present = [(probabilities[name], w) for name, w in zip(MODALITIES, weights) if name in probabilities]
    total = sum(w for _, w in present)
    if total <= 0:
        raise MateffnetError(f"fusion weights {weights} give the present stream(s) no weight")
    return sum(p * w for p, w in present) / total
