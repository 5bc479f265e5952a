import json

import pytest
import torch
from matplotlib.image import imread

from mateffnet.cli import main
from mateffnet.data.synthetic import CLASS_NAMES, render_video, video_rng, write_video
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet, TwoStreamNet
from mateffnet.engine.inference import decode_for, predict_video
from mateffnet.commands.explain import explain_video
from mateffnet.viz.explain import explain_clips



@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "spin.mp4"
    return write_video(path, render_video("spin_cw", video_rng(0, CLASS_NAMES.index("spin_cw"), 0), 14, 64))


def two_stream(folder, tokens="segments", **order_options):
    options = dict(backbone="resnet18", input_size=56, num_segments=3, class_names=list(CLASS_NAMES),
                   attention_tokens=tokens, frame_size="64", **order_options, flow_params={"inner_iterations": 5, "outer_iterations": 1,
                                                                          "epsilon": 0.0})
    model = TwoStreamNet(StreamNet(9, modality="rgb", **options), StreamNet(9, modality="flow", flow_length=2, **options),
                         weights=(1.0, 1.5))
    model.save_pretrained(folder)
    return model


def test_explain_writes_a_figure_per_stream_and_the_predictions(tmp_path, video):
    model = two_stream(tmp_path / "model")
    result = explain_video(video, tmp_path / "model", tmp_path / "out", topk=3)
    assert set(result.figures) == {"rgb", "flow"}
    for path in result.figures.values():
        assert path.parent == tmp_path / "out" and imread(path)[..., :3].std() > 0.05
    summary = json.loads(result.summary.read_text())
    assert summary["segments"] == 3 and summary["frames"] == 14
    assert set(summary["predictions"]) == {"rgb", "flow", "fused"}
    fused = summary["predictions"]["fused"]
    assert len(fused) == 3 and fused[0]["probability"] >= fused[1]["probability"]
    # the same numbers as `mateffnet predict` with one centre view: (1 · rgb + 1.5 · flow) / 2.5
    expected = predict_video(model.eval(), {"64": decode_for(model.rgb, video)}, segments=3, crops=1)["fused"]
    assert fused[0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert fused[0]["class"] == CLASS_NAMES[int(expected.argmax())]


def test_explain_draws_heat_maps_for_spatiotemporal_attention(tmp_path, video):
    StreamNet(9, modality="rgb", backbone="resnet18", input_size=64, num_segments=2, frame_size="64",
              attention_tokens="spatiotemporal").save_pretrained(tmp_path / "rgb_only")
    result = explain_video(video, tmp_path / "rgb_only", tmp_path / "out")
    assert set(result.figures) == {"rgb"} and set(result.predictions) == {"rgb"}
    image = imread(result.figures["rgb"])
    assert image.shape[0] > 300  # frames row + one row per head


def test_cli_explain(tmp_path, video, capsys):
    two_stream(tmp_path / "model")
    assert main(["explain", str(video), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
                 "--segments", "2", "--topk", "2"]) == 0
    output = capsys.readouterr().out
    assert "fused: " in output and "rgb attention: " in output
    assert json.loads((tmp_path / "out" / "explain.json").read_text())["segments"] == 2


def test_explain_errors_name_the_problem(tmp_path, video):
    two_stream(tmp_path / "model")
    with pytest.raises(MateffnetError, match="missing.mp4: missing"):
        explain_video(tmp_path / "missing.mp4", tmp_path / "model", tmp_path / "out")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(MateffnetError, match="text.mp4: unreadable"):
        explain_video(tmp_path / "text.mp4", tmp_path / "model", tmp_path / "out")
    StreamNet(9, backbone="resnet18", input_size=56, attention=False, frame_size="64").save_pretrained(tmp_path / "plain")
    with pytest.raises(MateffnetError, match="no attention layer"):
        explain_video(video, tmp_path / "plain", tmp_path / "out")


def test_explain_clips_draws_only_the_streams_given(tmp_path):
    model = two_stream(tmp_path / "model")
    clip = torch.randint(0, 256, (3, 3, 56, 56), dtype=torch.uint8)
    figures, predictions = explain_clips(model, {"rgb": clip}, {"rgb": clip.permute(0, 2, 3, 1).numpy()},
                                         tmp_path / "out", name="x.mp4", topk=2)
    assert set(figures) == {"rgb"} and figures["rgb"].name == "x_rgb_attention.png"
    assert set(predictions) == {"rgb"} and len(predictions["rgb"]) == 2
    with pytest.raises(MateffnetError, match="no clip given for the model's stream"):
        explain_clips(model, {}, {}, tmp_path / "out")


def test_explain_and_predict_work_with_an_order_aware_model_at_another_segment_count(tmp_path, video, capsys):
    model = two_stream(tmp_path / "model", temporal_encoding="learned", readout="query")  # trained at T = 3
    result = explain_video(video, tmp_path / "model", tmp_path / "out", segments=5)
    assert set(result.figures) == {"rgb", "flow"}
    summary = json.loads(result.summary.read_text())
    assert summary["segments"] == 5
    expected = predict_video(model.eval(), {"64": decode_for(model.rgb, video)}, segments=5, crops=1)["fused"]
    assert summary["predictions"]["fused"][0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert main(["predict", str(video), "--model", str(tmp_path / "model"), "--json", "--segments", "5"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(line) >= {"fused", "rgb", "flow"} and 0 < line["fused"][0]["prob"] <= 1
