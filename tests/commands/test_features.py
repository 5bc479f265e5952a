import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers.synthetic_actions import one_thread

from mateffnet.cli import main
from mateffnet.commands.features import find_videos
from mateffnet.io.decode import read_video
from mateffnet.engine.inference import eval_views, flow_clip, flow_fields
from mateffnet.models import TwoStreamNet

STRIDE = 8


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory):
    """Three of the shared real clips, linked into a folder of their own."""
    folder = tmp_path_factory.mktemp("clips")
    for path in sorted((shared_data / "videos" / "ucf101").rglob("*.avi"))[:3]:
        (folder / path.parent.name).mkdir(exist_ok=True)
        (folder / path.parent.name / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def features(clips, synthetic_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    with one_thread():
        assert main(["features", str(clips), "--model", str(synthetic_model), "--out", str(out), "--stride", str(STRIDE),
                     "--concat", "--no-progress", "--device", "cpu"]) == 0  # compared with float32 CPU numbers
    return out


def direct_pooled(stream, clip):
    """The backbone's pooled features of one snippet clip (T, C, H, W), centre crop, straight from the model."""
    views = eval_views(clip, stream, 1)[0]  # (T, C, S, S)
    with torch.no_grad():
        return stream.backbone.forward_features(stream.normalize(views)).mean(dim=(2, 3))[0].numpy()


def test_each_video_gets_one_row_per_snippet_at_the_stride_with_the_time_of_its_centre(features, clips, synthetic_model):
    model = TwoStreamNet.from_pretrained(synthetic_model)
    span = model.flow.config.flow_length + 1
    for video_id, path in find_videos(clips):
        frames, info = read_video(path, size=64)
        expected = (len(frames) - span) // STRIDE + 1
        meta = json.loads((features / f"{video_id}.json").read_text())
        rgb, flow = (np.load(features / name / f"{video_id}.npy") for name in ("rgb", "flow"))
        assert rgb.shape == (expected, model.rgb.num_features) and rgb.dtype == np.float32
        assert flow.shape == (expected, model.flow.num_features)
        np.testing.assert_array_equal(np.load(features / "rgb_flow" / f"{video_id}.npy"), np.concatenate([rgb, flow], 1))
        assert meta["snippets"] == expected and meta["stride"] == STRIDE and meta["span"] == span
        np.testing.assert_allclose(meta["times"], (np.arange(expected) * STRIDE + span / 2) / info.fps, atol=1e-4)


def test_the_features_are_the_models_own_on_those_frames(features, clips, synthetic_model):
    model = TwoStreamNet.from_pretrained(synthetic_model)
    length = model.flow.config.flow_length
    video_id, path = find_videos(clips)[0]
    frames, _ = read_video(path, size=64)
    rgb, flow = (np.load(features / name / f"{video_id}.npy") for name in ("rgb", "flow"))
    for i in (0, len(rgb) // 2, len(rgb) - 1):
        first = i * STRIDE
        picked = torch.from_numpy(frames[[first + length // 2]]).permute(0, 3, 1, 2)
        np.testing.assert_allclose(rgb[i], direct_pooled(model.rgb, picked), rtol=1e-4, atol=1e-5)
        pairs = np.arange(first, first + length)
        fields = flow_fields(frames[pairs], frames[pairs + 1], model.flow, torch.device("cpu"))
        np.testing.assert_allclose(flow[i], direct_pooled(model.flow, flow_clip(fields, 1, length)), rtol=1e-4, atol=1e-5)


def test_attended_features_are_the_streams_512_d_tokens_over_neighbouring_snippets(clips, synthetic_model, tmp_path):
    with one_thread():
        assert main(["features", str(clips), "--model", str(synthetic_model), "--out", str(tmp_path), "--stride",
                     str(STRIDE), "--streams", "rgb", "--features", "attended", "--no-progress", "--shard", "0/3"]) == 0
    (video_id, _), = [v for v in find_videos(clips)[0::3]]
    attended = np.load(tmp_path / "rgb" / f"{video_id}.npy")
    assert attended.shape[1] == 512 and not (tmp_path / "flow").exists()
    report = json.loads((tmp_path / "report_0.json").read_text())
    assert report["shard"] == [0, 3] and report["done"] == [video_id] and report["failed"] == {}  # --shard 0/3: only the first of three


def test_a_killed_run_resumes_where_it_stopped_and_redoes_nothing(clips, synthetic_model, tmp_path):
    command = [sys.executable, "-m", "mateffnet", "features", str(clips), "--model", str(synthetic_model), "--out",
               str(tmp_path), "--stride", str(STRIDE), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("*.json")) or not any(p.name != "features.json" for p in tmp_path.rglob("*.json")):
        assert first.poll() is None and time.monotonic() < deadline, "the first video never finished"
        time.sleep(0.05)
    first.kill()
    first.wait()
    finished = sorted(p for p in tmp_path.rglob("*.json") if p.name != "features.json")
    assert 1 <= len(finished) < 3
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    report = json.loads((tmp_path / "report.json").read_text())
    ids = [video_id for video_id, _ in find_videos(clips)]
    assert sorted(report["skipped"] + report["done"]) == sorted(ids) and len(report["skipped"]) == len(finished)
    for path, stamp in stamps.items():
        if path.with_suffix("").name in {Path(v).name for v in report["skipped"]}:
            assert path.stat().st_mtime_ns == stamp  # finished files are kept, not rewritten
    for path in tmp_path.rglob("*.npy"):
        assert np.load(path).shape[0] >= 1  # a kill never leaves a half-written file under a final name


def test_a_packed_store_gives_the_features_of_its_videos_with_the_stored_flow(synthetic_model, long_synthetic_video,
                                                                             tmp_path):
    from mateffnet.prepare.job import PrepareOptions, prepare_dataset
    from mateffnet.data.synthetic import write_video

    frames, _ = read_video(long_synthetic_video, max_frames=40)
    write_video(tmp_path / "videos" / "slides" / "clip.mp4", frames, fps=8)
    report = prepare_dataset(tmp_path / "videos", tmp_path / "store", "folders", progress=False,
                             options=PrepareOptions(size=64, flow_method="farneback", device="cpu", workers=0,
                                                    flow_codec="lz4", rgb_quality=100))
    assert report.exit_status == 0
    with one_thread():
        for source, out in (("videos", "from_video"), ("store", "from_store")):
            assert main(["features", str(tmp_path / source), "--model", str(synthetic_model), "--out",
                         str(tmp_path / out), "--stride", "4", "--no-progress", "--device", "cpu"]) == 0
    ((packed, path),), ((video, _),) = find_videos(tmp_path / "store"), find_videos(tmp_path / "videos")
    assert path.suffix == ".mfv"
    stored = json.loads((tmp_path / "from_store" / f"{packed}.json").read_text())
    decoded = json.loads((tmp_path / "from_video" / f"{video}.json").read_text())
    assert stored["times"] == decoded["times"] and stored["snippets"] == (40 - 5) // 4 + 1
    for stream in ("rgb", "flow"):
        a = np.load(tmp_path / "from_store" / stream / f"{packed}.npy")
        b = np.load(tmp_path / "from_video" / stream / f"{video}.npy")
        assert a.shape == b.shape
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # the same frames and flow, up to JPEG's loss
