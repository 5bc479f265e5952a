"""`mateffnet flow` on frames too large for the CPU: --size resizes first, an estimate is printed up front,
and the batches stay small."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mateffnet.cli import main
from mateffnet.commands import flow as flow_command
from mateffnet.commands.flow import CPU_BATCH_PIXELS, write_flow_images

pytest.importorskip("cv2", reason="these tests use Farneback flow (OpenCV)")

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def large_video(tmp_path, video_writer, square_frames):
    """14 frames of 400x300: above the size that gets an estimate on the CPU, small enough to be fast."""
    return video_writer(tmp_path / "large.mp4", square_frames(n=14, height=300, width=400, step=4), codec="mpeg4")


def test_size_gives_flow_images_of_the_requested_size(large_video, tmp_path, capsys):
    out = tmp_path / "flow"
    assert main(["flow", str(large_video), "--out", str(out), "--method", "farneback", "--device", "cpu",
                 "--size", "64"]) == 0
    assert Image.open(out / "flow_x_00001.jpg").size == (85, 64)  # short side 64, aspect kept
    assert Image.open(out / "color_00013.jpg").size == (85, 64)
    assert json.loads((out / "flow.json").read_text())["height"] == 64
    assert "note:" not in capsys.readouterr().err  # small frames: no estimate
    assert main(["flow", str(large_video), "--out", str(tmp_path / "wh"), "--method", "farneback", "--device", "cpu",
                 "--size", "48x32"]) == 0
    assert Image.open(tmp_path / "wh/flow_y_00001.jpg").size == (48, 32)


def test_large_frames_on_the_cpu_print_an_estimate_from_the_first_batch_without_a_traceback(large_video, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "mateffnet", "flow", str(large_video), "--out", str(tmp_path / "f"),
                             "--method", "farneback", "--device", "cpu"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "note:" in line]
    assert line.startswith("mateffnet flow: note: 400x300 frames, farneback on the CPU: ")
    assert " s a pair; the 13 pairs will take about " in line and line.endswith("--size 256 computes it at 341x256")
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "f").glob("flow_x_*.jpg"))) == 13


def test_on_the_cpu_a_batch_never_holds_more_than_the_pixel_budget(large_video, tmp_path, monkeypatch):
    sizes = []
    real = flow_command._flow_batch

    def counting(frames, *args):
        sizes.append(len(frames) - 1)
        return real(frames, *args)

    monkeypatch.setattr(flow_command, "_flow_batch", counting)
    write_flow_images(large_video, tmp_path / "f", method="farneback", device="cpu", batch_size=16, progress=False)
    budget = CPU_BATCH_PIXELS // (400 * 300)
    assert sizes == [budget, 13 - budget]  # 16 asked; 11 fit the budget at 400x300


def test_a_bad_size_is_one_line_naming_it(large_video, tmp_path, capsys):
    assert main(["flow", str(large_video), "--out", str(tmp_path / "f"), "--method", "farneback", "--size", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mateffnet flow: error: bad frame size '0'; expected a short side like 256 or WIDTHxHEIGHT like 340x256"
    )
    assert not (tmp_path / "f").exists()
