import json

import numpy as np
import pytest
import torch

from mateffnet.cli import main
from mateffnet.errors import MateffnetError
from mateffnet.engine.export import EXPORT_FILES, example_clips, export_model, export_stream, read_sidecar
from mateffnet.models import StreamNet, TwoStreamNet

onnxruntime = pytest.importorskip("onnxruntime")


def trained_like(model: StreamNet) -> StreamNet:
    """Move BatchNorm statistics off their initial values, so an export that dropped them would show."""
    with torch.no_grad():
        model.train()(example_clips(model, batch=4, segments=2, seed=5) // 2 + 60)
    return model.eval()


def small_stream(modality="rgb", **options) -> StreamNet:
    options = {"backbone": "resnet18", "input_size": 32, "flow_length": 2, **options}
    names = [f"class_{i}" for i in range(5)]
    return trained_like(StreamNet(5, modality=modality, class_names=names, **options))


def run_onnx(path, clips: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"clips": clips.numpy()})[0]


def reference(model: StreamNet, clips: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(clips).numpy()


@pytest.mark.parametrize(
    "backbone, modality, exporter, tokens",
    [("efficientnet_b0", "rgb", "dynamo", "segments"), ("resnet18", "flow", "dynamo", "spatiotemporal"),
     ("resnet18", "flow", "torchscript", "segments")],
)
def test_onnx_export_matches_pytorch_for_other_batch_and_segment_counts(tmp_path, backbone, modality, exporter, tokens):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    size = 64 if backbone == "efficientnet_b0" else 32
    model = small_stream(modality, backbone=backbone, attention_tokens=tokens, input_size=size)
    result = export_stream(model, tmp_path / "model.onnx", "onnx", onnx_exporter=exporter)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    for batch, segments in [(1, 1), (4, 5)]:  # the export example was (2, 2), the built-in check (3, 3)
        clips = example_clips(model, batch, segments, seed=batch * 10 + segments)
        got = run_onnx(result.path, clips)
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, reference(model, clips), atol=1e-4, rtol=1e-4)


def test_exported_graph_declares_uint8_input_with_named_dynamic_axes(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = small_stream("flow")
    path = export_stream(model, tmp_path / "m.onnx", onnx_exporter="torchscript").path
    graph = onnx.load(str(path)).graph
    (clips,), (logits,) = graph.input, graph.output
    assert (clips.name, logits.name) == ("clips", "logits")
    assert clips.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in clips.type.tensor_type.shape.dim]
    assert dims == ["batch", "segments", 4, 32, 32]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("modality", ["rgb", "flow"])
def test_torchscript_export_matches_pytorch_for_other_batch_and_segment_counts(tmp_path, modality):
    model = small_stream(modality)
    result = export_stream(model, tmp_path / "model.torchscript.pt", "torchscript")
    loaded = torch.jit.load(str(result.path))
    for batch, segments in [(1, 1), (4, 5)]:
        clips = example_clips(model, batch, segments, seed=segments)
        with torch.no_grad():
            got = loaded(clips).numpy()
        np.testing.assert_allclose(got, reference(model, clips), atol=1e-5, rtol=1e-5)


def test_stream_without_attention_exports(tmp_path):
    model = small_stream(attention=False)
    result = export_stream(model, tmp_path / "model.torchscript.pt", "torchscript")
    assert result.max_abs_diff < 1e-5


def test_sidecar_describes_input_classes_and_normalisation(tmp_path):
    model = small_stream("flow", flow_length=2, num_segments=5)
    result = export_stream(model, tmp_path / "model.onnx", onnx_exporter="torchscript")
    sidecar = json.loads(result.sidecar.read_text())
    assert result.sidecar.name == "model.onnx.json"
    assert sidecar == read_sidecar(result.path)
    assert sidecar["class_names"] == [f"class_{i}" for i in range(5)]
    assert sidecar["input"]["shape"] == ["batch", "segments", 4, 32, 32]
    assert sidecar["input"]["dtype"] == "uint8"
    assert sidecar["normalization"] == {"inside_graph": True, "mean": [128.0], "std": [128.0],
                                        "formula": "(clips - mean) / std per input channel"}
    assert sidecar["num_segments"] == 5 and sidecar["flow_length"] == 2 and sidecar["flow_bound"] == 20.0
    assert sidecar["verification"]["input_shape"] == [3, 3, 4, 32, 32]
    assert sidecar["opset"] >= 13


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    model = small_stream().train()
    clips = example_clips(model, 1, 3)
    with torch.no_grad():
        model.eval()(clips)
    kept = model.attention_weights
    model.train()
    export_stream(model, tmp_path / "model.onnx", onnx_exporter="torchscript")
    export_stream(model, tmp_path / "model.torchscript.pt", "torchscript")
    assert model.training
    assert model.attention_weights is kept


def test_export_model_writes_each_stream_of_a_two_stream_folder(tmp_path):
    names = [f"class_{i}" for i in range(5)]
    rgb, flow = small_stream("rgb"), small_stream("flow")
    rgb.config.class_names = flow.config.class_names = names
    TwoStreamNet(rgb, flow, weights=(1.0, 1.5)).save_pretrained(tmp_path / "model")
    results = export_model(tmp_path / "model", "torchscript")
    assert [(r.stream, r.path) for r in results] == [
        ("rgb", tmp_path / "model" / "rgb" / EXPORT_FILES["torchscript"]),
        ("flow", tmp_path / "model" / "flow" / EXPORT_FILES["torchscript"]),
    ]
    assert all(r.sidecar.is_file() for r in results)

    results = export_model(tmp_path / "model", "onnx", out_dir=tmp_path / "deploy", onnx_exporter="torchscript",
                           verify=False)
    assert {r.path for r in results} == {tmp_path / "deploy" / s / "model.onnx" for s in ("rgb", "flow")}
    assert json.loads((tmp_path / "deploy" / "fusion.json").read_text())["weights"] == {"rgb": 1.0, "flow": 1.5}


def test_export_model_accepts_a_single_stream_folder(tmp_path):
    small_stream("flow").save_pretrained(tmp_path / "flow_only")
    (result,) = export_model(tmp_path / "flow_only", "torchscript", verify=False)
    assert result.path == tmp_path / "flow_only" / "model.torchscript.pt"
    assert result.max_abs_diff is None
    assert read_sidecar(result.sidecar)["verification"] is None


def test_bad_requests_are_one_line_errors(tmp_path):
    with pytest.raises(MateffnetError, match="model folder not found"):
        export_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MateffnetError, match="no model found"):
        export_model(tmp_path / "empty")
    with pytest.raises(MateffnetError, match="export format must be one of onnx, torchscript, got 'tflite'"):
        export_stream(small_stream(), tmp_path / "m", "tflite")


def test_cli_export_prints_each_stream_and_its_check(tmp_path, capsys):
    small_stream("rgb").save_pretrained(tmp_path / "model" / "rgb")
    status = main(["export", "--model", str(tmp_path / "model"), "--format", "torchscript",
                   "--out", str(tmp_path / "out")])
    output = capsys.readouterr().out
    assert status == 0
    assert (tmp_path / "out" / "rgb" / "model.torchscript.pt").is_file()
    header, row = output.strip().splitlines()
    assert header.split()[:3] == ["stream", "format", "file"]
    assert row.split()[:2] == ["rgb", "torchscript"]
    assert float(row.split()[-1]) < 1e-5


def test_cli_export_reports_a_missing_folder_as_an_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nothing")]) == 2
    assert "model folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("options", [{"temporal_encoding": "learned", "readout": "query"},
                                     {"temporal_encoding": "sinusoidal"}])
def test_an_order_aware_stream_exports_with_a_dynamic_segment_count(tmp_path, options, exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    model = small_stream("flow", num_segments=4, **options)
    if model.temporal_encoding.kind == "learned":  # a trained-looking table, so interpolation matters
        with torch.no_grad():
            model.temporal_encoding.table.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    result = export_stream(model, tmp_path / "model.onnx", "onnx", onnx_exporter=exporter)
    assert result.max_abs_diff < 1e-4
    for segments in (1, 4, 7):  # fewer, as many as, more than the training segments: interpolated encodings
        clips = example_clips(model, batch=2, segments=segments, seed=segments)
        np.testing.assert_allclose(run_onnx(tmp_path / "model.onnx", clips), reference(model, clips), atol=1e-4, rtol=1e-4)
