"""`mateffnet evaluate` end to end on a store generated here (no ../shared needed)."""

import json

import numpy as np
import pytest
import torch

from mateffnet.cli import main
from mateffnet.engine.metrics import classification_metrics
from mateffnet.engine.scoring import load_scores
from mateffnet.models import StreamNet, TwoStreamNet
from tests.helpers.uniform_store import write_uniform_video

VIDEOS = {"walk/v1": 0, "walk/v2": 0, "jump/v1": 1, "jump/v2": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    for i, video_id in enumerate(VIDEOS):
        write_uniform_video(root / "store", video_id, 12 + i)
    (root / "test.txt").write_text("".join(f"{video_id}.avi {label}\n" for video_id, label in VIDEOS.items()))
    (root / "classes.txt").write_text("walk\njump\n")
    torch.manual_seed(0)
    options = dict(backbone="resnet18", input_size=32, num_segments=2, class_names=["walk", "jump"])
    TwoStreamNet(StreamNet(2, modality="rgb", **options), StreamNet(2, modality="flow", flow_length=2, **options)
                 ).save_pretrained(root / "model")
    return root


def evaluate(setup, out, *extra):
    return main(["evaluate", "--model", str(setup / "model"), "--data", str(setup / "store"), "--format", "list",
                 "--annotations", str(setup / "test.txt"), "--classes", str(setup / "classes.txt"),
                 "--segments", "2", "--crops", "1", "--workers", "0", "--device", "cpu", "--no-progress",
                 "--out", str(out), *extra])


def test_evaluate_scores_both_streams_and_their_fusion_and_writes_its_files(setup, tmp_path, capsys):
    assert evaluate(setup, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("stream") and "(4 videos;" in printed
    assert [line.split()[0] for line in printed.splitlines()[1:4]] == ["rgb", "flow", "fused"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["videos"] == 4 and metrics["class_names"] == ["walk", "jump"]
    ids, labels, class_names, scores = load_scores(tmp_path / "out" / "scores.npz")
    assert sorted(ids) == sorted(VIDEOS) and [VIDEOS[v] for v in ids] == labels.tolist()
    assert np.allclose(scores["fused"], (scores["rgb"] + scores["flow"]) / 2, atol=1e-6)
    for stream in ("rgb", "flow", "fused"):
        expected = classification_metrics(scores[stream], labels, 2)
        assert metrics["streams"][stream]["top1"] == pytest.approx(expected.top1)
    assert (tmp_path / "out" / "per_class.csv").read_text().splitlines()[0] == "class,rgb,flow,fused"
    assert sorted(p.name for p in (tmp_path / "out").glob("confusion_*.png")) == [
        "confusion_flow.png", "confusion_fused.png", "confusion_rgb.png"]


def test_saved_scores_are_fused_again_with_other_weights(setup, tmp_path):
    assert evaluate(setup, tmp_path / "first") == 0
    assert main(["evaluate", "--scores", str(tmp_path / "first" / "scores.npz"), "--fusion-weights", "1", "0",
                 "--out", str(tmp_path / "refused")]) == 0
    refused = json.loads((tmp_path / "refused" / "metrics.json").read_text())
    assert refused["streams"]["fused"]["top1"] == refused["streams"]["rgb"]["top1"]
    assert refused["fusion_weights"] == {"rgb": 1.0, "flow": 0.0}


def test_one_stream_folder_is_enough_and_bad_folders_are_named(setup, tmp_path, capsys):
    assert main(["evaluate", "--rgb", str(setup / "model" / "rgb"), "--data", str(setup / "store"), "--format", "list",
                 "--annotations", str(setup / "test.txt"), "--classes", str(setup / "classes.txt"), "--segments", "2",
                 "--crops", "1", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    assert set(json.loads((tmp_path / "o" / "metrics.json").read_text())["streams"]) == {"rgb", "fused"}
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(setup / "store")]) == 2
    assert f"--model {tmp_path}: no rgb/ or flow/ model folder inside" in capsys.readouterr().err
