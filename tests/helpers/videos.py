"""Small synthetic videos written with PyAV, and the real clips of ../shared/data with their frame counts."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

# The real clips in ../shared/data/videos and their decoded frame counts (README of the data).
REAL_CLIPS = {
    "ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 164,
    "ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi": 240,
    "ucf101/SoccerJuggling/v_SoccerJuggling_g24_c01.avi": 251,
    "ucf101/Basketball/v_Basketball_g01_c01.avi": 141,
    "ucf101/Archery/v_Archery_g01_c01.avi": 131,
    "hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi": 72,
    "hmdb51/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi": 74,
    "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi": 48,
    "hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": 83,
    "kinetics400/arm_wrestling/demo.mp4": 280,
}


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "mpeg4",
    rotation: int = 0,
    pts_ms: list[int] | None = None,
) -> Path:
    """Encode uint8 (N, H, W, 3) RGB frames; `rotation` sets a display matrix, `pts_ms` makes a
    variable-frame-rate file with these presentation times."""
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.options = {"qscale": "2"}
        if pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation:
            if not hasattr(stream, "set_display_rotation"):  # PyAV >= 18 writes display matrices
                pytest.skip(f"PyAV {av.__version__} cannot write a display rotation")
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_square_frames(n: int = 12, height: int = 48, width: int = 64, step: int = 2) -> np.ndarray:
    """A textured background with a bright square moving right by `step` px per frame."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    frames = np.repeat(background[None], n, axis=0)
    for i in range(n):
        x = 4 + i * step
        frames[i, 10:26, x : x + 16] = (230, 200, 40)
    return frames
