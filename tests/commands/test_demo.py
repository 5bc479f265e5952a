"""`mateffnet demo` end to end (about 2–3 minutes on 2 CPU cores), and predict with the model it trains."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from tests.helpers.browser import needs_chromium, screenshot
from mateffnet.cli import main
from mateffnet.commands.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, device="cpu", seed=0, progress=False)


def test_each_stream_wins_where_it_should_and_fusion_wins_overall(demo):
    _, results = demo
    groups, streams = results["group_accuracy"], results["streams"]
    assert groups["flow"]["motion"] > groups["rgb"]["motion"]  # direction of motion: only flow sees it
    assert groups["rgb"]["appearance"] > groups["flow"]["appearance"]  # colour: only RGB sees it
    assert streams["fused"]["top1"] >= max(streams["rgb"]["top1"], streams["flow"]["top1"])
    assert results["videos"] == 36  # scored on the test list, not the training videos


def test_demo_leaves_models_results_and_a_report(demo):
    out, results = demo
    for name in ("rgb/config.json", "rgb/model.safetensors", "flow/config.json", "flow/model.safetensors",
                 "fusion.json", "results.json", "report.html", "evaluation/scores.npz", "runs/rgb/curves.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["streams"]) == {"rgb", "flow", "fused"}
    assert set(saved["streams"]["fused"]["per_class"]) == set(saved["class_names"])
    assert len(list((out / "attention").glob("*.png"))) >= 2


@needs_chromium
def test_the_demo_report_renders_without_console_errors(demo, tmp_path):
    out, _ = demo
    assert screenshot(out / "report.html", tmp_path / "shot.png", tmp_path / "profile") == []
    assert imread(tmp_path / "shot.png")[..., :3].std() > 0.05


def test_predict_classifies_every_real_clip_with_the_demo_model(demo, shared_data, capsys):
    out, _ = demo
    clips = sorted(str(p) for p in (shared_data / "videos").rglob("*.*") if p.suffix in (".avi", ".mp4"))
    assert main(["predict", *clips, "--model", str(out), "--json", "--segments", "8", "--topk", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["video"] for line in lines] == clips
    for line in lines:
        for stream in ("fused", "rgb", "flow"):
            probs = [entry["prob"] for entry in line[stream]]
            assert len(probs) == 3 and all(0.0 <= p <= 1.0 for p in probs)
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
            assert np.isfinite(probs).all()


def test_within_pair_accuracy_counts_clips_scored_above_their_twin_class_and_gives_identical_twins_half(tmp_path):
    from mateffnet.commands.demo import within_pair_accuracy
    from mateffnet.data.synthetic import CLASS_SETS
    from mateffnet.engine.scoring import save_scores

    names = [c.name for c in CLASS_SETS["order"]]
    grow, shrink, ball = (names.index(n) for n in ("pulse_grow_shrink", "pulse_shrink_grow", "ball_red"))
    labels = np.array([grow, shrink, grow, shrink, ball])
    scores = np.zeros((5, len(names)), np.float32)
    scores[0, [grow, shrink]] = 0.6, 0.4  # right
    scores[1, [grow, shrink]] = 0.6, 0.4  # wrong (the same scores as its twin: one of the two is right)
    scores[2, [grow, shrink, ball]] = 0.3, 0.1, 0.6  # top-1 wrong, but above its twin class: counts
    scores[3, [grow, shrink]] = 0.5, 0.5  # a tie: half
    scores[4, ball] = 1.0  # not an order class: not counted
    fused = scores.copy()
    fused[:, [grow, shrink]] = 0.5
    save_scores(tmp_path / "scores.npz", [f"v{i}" for i in range(5)], labels, names, {"rgb": scores, "fused": fused},
                (1.0, 1.0))
    assert within_pair_accuracy(tmp_path / "scores.npz") == {"rgb": (1 + 0 + 1 + 0.5) / 4, "fused": 0.5}
