"""prepare when the options, the environment or another process get in the way: one line naming the option or
path, exit status 2 (or 1 when some videos failed), nothing finished lost, no temporary file left, no traceback."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mateffnet.cli import main
from mateffnet.io.store import PackedVideo

pytest.importorskip("cv2", reason="the prepare tests use Farneback flow (OpenCV)")

F = ["--size", "32", "--flow-method", "farneback", "--device", "cpu"]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def videos(tmp_path, video_writer, square_frames):
    """Three tiny clips in a folder-per-class tree."""
    for i in range(3):
        video_writer(tmp_path / f"src/c/v{i}.mp4", square_frames(n=6), codec="mpeg4")
    return tmp_path / "src"


def _cli(*args, inject: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """`mateffnet ARGS` in a fresh interpreter; `inject` is Python run first (to simulate a failing disk)."""
    code = f"{inject}\nfrom mateffnet.cli import main\nraise SystemExit(main({[str(a) for a in args]!r}))"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def _temporaries(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".lock-tmp")]


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("--flow-batch", "0", "flow_batch (--flow-batch) must be >= 1, got 0"),
        ("--max-frames", "0", "max_frames must be >= 1, got 0"),
        ("--workers", "-1", "workers must be >= 0, got -1"),
        ("--rgb-quality", "101", "rgb_quality must be in 1..100, got 101"),
        ("--flow-quality", "0", "flow_quality must be in 1..100, got 0"),
        ("--size", "0", "bad frame size '0'"),
        ("--size", "32x", "bad frame size '32x'"),
    ],
)
def test_a_bad_numeric_option_is_one_line_naming_it_before_any_work(videos, tmp_path, capsys, option, value, named):
    assert main(["prepare", str(videos), "--out", str(tmp_path / "store"), *F, "--workers", "0", option, value]) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()  # refused before any work


def test_flow_batch_zero_in_a_subprocess_has_no_traceback(videos, tmp_path):
    result = _cli("prepare", videos, "--out", tmp_path / "store", *F, "--flow-batch", "0")
    assert result.returncode == 2
    assert "--flow-batch" in result.stderr and "Traceback" not in result.stderr
