import json

import numpy as np
import pytest
from tests.helpers.browser import needs_chromium, screenshot
from matplotlib.image import imread
from tests.helpers.synthetic_actions import FPS, SECONDS_PER_ACTION, SEQUENCE, one_thread

from mateffnet.cli import main
from mateffnet.commands.timeline import merge_windows

WINDOW, STRIDE = 1.5, 0.5


@pytest.fixture(scope="module")
def timeline(synthetic_model, long_synthetic_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline")
    with one_thread():
        status = main(["timeline", str(long_synthetic_video), "--model", str(synthetic_model), "--window", str(WINDOW),
                       "--stride", str(STRIDE), "--segments", "4", "--batch", "4", "--merge", "0.4", "--min-segment", "1.5", "--out", str(out),
                       "--no-progress", "--device", "cpu"])  # the small test model's margins are too thin for bf16
    assert status == 0
    return out / long_synthetic_video.stem


def test_the_fused_timeline_recovers_the_sequence_and_its_boundaries_within_one_stride(timeline):
    segments = json.loads((timeline / "segments.json").read_text())["segments"]
    assert [s["label"] for s in segments] == SEQUENCE
    true_boundaries = [SECONDS_PER_ACTION * (i + 1) for i in range(len(SEQUENCE) - 1)]
    for before, after, boundary in zip(segments, segments[1:], true_boundaries):
        assert before["end"] == after["start"] and abs(after["start"] - boundary) <= STRIDE + 1e-6, (before, after)


def test_each_window_line_has_its_times_and_the_top_classes_of_every_stream(timeline):
    lines = [json.loads(line) for line in (timeline / "windows.jsonl").read_text().splitlines()]
    duration = len(SEQUENCE) * SECONDS_PER_ACTION
    assert len(lines) == (duration * FPS - WINDOW * FPS) // int(STRIDE * FPS) + 1
    for i, line in enumerate(lines):
        assert line["start"] == pytest.approx(i * STRIDE) and line["end"] == pytest.approx(i * STRIDE + WINDOW)
        assert line["end_frame"] - line["start_frame"] == WINDOW * FPS
        for stream in ("fused", "rgb", "flow"):
            probs = [entry["prob"] for entry in line[stream]]
            assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_the_picture_and_the_page_are_written_and_self_contained(timeline):
    png, page = timeline / "timeline.png", (timeline / "timeline.html").read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 100_000
    assert page.count('src="data:image/jpeg;base64,') >= 10  # thumbnails under the timeline
    assert 'src="data:image/png;base64,' in page and "http" not in page.split("<body>")[1]


@needs_chromium
def test_the_page_renders_without_console_errors(timeline, tmp_path):
    assert screenshot(timeline / "timeline.html", tmp_path / "shot.png", tmp_path / "profile") == []
    assert imread(tmp_path / "shot.png")[..., :3].std() > 0.05


def test_merging_keeps_runs_of_one_class_above_the_threshold_and_breaks_at_uncertain_windows():
    fused = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.2, 0.8], [0.1, 0.9]])
    centres = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    segments = merge_windows(centres, fused, ["a", "b"], threshold=0.6, stride=1.0, duration=6.0)
    assert [(s["label"], s["start"], s["end"], s["windows"]) for s in segments] == [("a", 0.5, 2.5, 2), ("b", 3.5, 5.5, 2)]
    assert segments[0]["prob"] == pytest.approx(0.85)
    merged = merge_windows(centres, fused, ["a", "b"], threshold=0.0, stride=1.0, duration=6.0)
    assert [(s["label"], s["windows"]) for s in merged] == [("a", 3), ("b", 2)]
    blip = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    cleaned = merge_windows(np.arange(7) + 0.5, blip, ["a", "b"], threshold=0.5, stride=1.0, duration=7.0, min_duration=2.0)
    assert [(s["label"], s["start"], s["end"]) for s in cleaned] == [("a", 0.0, 5.0), ("b", 5.0, 7.0)]


def test_a_video_that_does_not_decode_gives_one_clear_line_and_the_others_are_done(synthetic_model, tmp_path, capsys):
    from mateffnet.data.synthetic import write_video
    from tests.helpers.synthetic_actions import clip_of

    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    good = write_video(tmp_path / "good.mp4", clip_of("spin_cw", 200, 24), fps=FPS)
    with one_thread():
        status = main(["timeline", str(tmp_path / "broken.mp4"), str(good), "--model", str(synthetic_model), "--window",
                       "1", "--segments", "4", "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "broken.mp4" in error[0] and "unreadable" in error[0]
    assert (tmp_path / "out" / "good" / "windows.jsonl").stat().st_size > 0
    assert not (tmp_path / "out" / "broken").exists() or not list((tmp_path / "out" / "broken").glob("*.jsonl"))
