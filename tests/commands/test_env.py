import subprocess
import sys
from pathlib import Path

import torch

from mateffnet import __version__
from mateffnet.cli import main
from mateffnet.commands.env import environment_lines


def _fields(lines):
    return dict(line.split(": ", 1) for line in lines)


def test_env_names_every_version_and_code_path_a_bug_report_needs():
    fields = _fields(environment_lines())
    for name in ("python", "mateffnet", "torch", "torchvision", "timm", "numpy", "triton", "pyav", "opencv",
                 "decoding", "flow (prepare, auto)", "jpeg"):
        assert name in fields, name
    assert fields["mateffnet"] == __version__
    assert fields["torch"].startswith(torch.__version__)
    assert ("gpu 0" in fields) == torch.cuda.is_available()


def test_env_reports_pillow_jpeg_where_torchvision_has_no_codecs(monkeypatch):
    import torchvision.io

    monkeypatch.delattr(torchvision.io, "decode_jpeg")
    assert _fields(environment_lines())["jpeg"].startswith("pillow on")


def test_env_says_not_installed_for_a_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    assert _fields(environment_lines())["opencv"] == "not installed"


def test_the_cli_prints_the_block_and_its_version(capsys):
    assert main(["env"]) == 0
    assert f"mateffnet: {__version__}" in capsys.readouterr().out.splitlines()
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run([sys.executable, "-m", "mateffnet", "--version"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(src), "PATH": ""}, timeout=120)
    assert result.stdout.strip() == f"mateffnet {__version__}"
