"""Export trained streams to ONNX or TorchScript for deployment outside mateffnet.

An exported stream is the whole `StreamNet` forward pass: input `clips`, uint8 (batch, segments,
channels, height, width) in storage units (RGB 0–255; flow quantised ±bound px → 0–255, channels x0, y0,
x1, y1, …), output `logits` (batch, classes). The batch and segment counts are dynamic; height and width
are the model's input size. The normalisation (mean/std from the model's config) is inside the graph, so
a deployment feeds the same uint8 data the data pipeline produces and cannot use the wrong constants.

Next to each exported file goes a JSON sidecar (`<file>.json`) with the class names, input shape and
meaning, the normalisation constants already in the graph, the training segment count, and the result of
checking the exported model against PyTorch on a batch and segment count other than the export example's.

ONNX exporters: "dynamo" (`torch.onnx.export(..., dynamo=True)`, torch's default since 2.9; needs the
`onnxscript` package) or "torchscript" (the older tracing exporter, kept for older torch). TorchScript
files are made with `torch.jit.trace`, which records the shapes symbolically, so they too accept any
batch and segment count. Export works on a copy of the model on the CPU: the caller's model (its device,
training mode and the attention weights it keeps from its last forward pass) is left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mateffnet.config import MODALITIES
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json, atomic_write_text, output_folder
from mateffnet.models.streamnet import CONFIG_FILE, StreamNet
from mateffnet.models.twostream import FUSION_FILE

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_EXPORTERS = ("dynamo", "torchscript")
EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT_NAME = "clips"
OUTPUT_NAME = "logits"
# The exported model must agree with PyTorch to within this, relative to the largest |logit|.
VERIFY_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    stream: str  # "rgb" or "flow"
    format: str
    path: Path
    sidecar: Path
    max_abs_diff: float | None  # exported vs PyTorch logits on the check batch; None if not checked
    checked_shape: tuple[int, ...] | None  # the (batch, segments, C, H, W) of that check batch


def export_stream(
    model: StreamNet,
    path: str | Path,
    format: str = "onnx",
    *,
    opset: int | None = None,
    onnx_exporter: str = "dynamo",
    verify: bool = True,
) -> ExportResult:
    """Export one stream to `path` (written atomically) plus the sidecar `<path>.json`.

    With `verify`, the exported file is loaded back (onnxruntime for ONNX, `torch.jit.load` for TorchScript)
    and run on a batch whose batch size and segment count differ from the export example's; a mismatch with
    PyTorch beyond `VERIFY_TOLERANCE` (relative to the largest logit) raises MateffnetError.
    """
    if format not in EXPORT_FORMATS:
        raise MateffnetError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise MateffnetError(f"onnx_exporter must be one of {', '.join(ONNX_EXPORTERS)}, got {onnx_exporter!r}")
    if not isinstance(model, StreamNet):
        raise MateffnetError(f"export_stream expects a StreamNet, got {type(model).__name__}")
    path = Path(path)
    model = copy.deepcopy(model).float().cpu().eval()
    example = example_clips(model, batch=2, segments=2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the input-shape check, deprecation notices
        if format == "onnx":
            exporter_name, opset = _export_onnx(model, example, path, opset, onnx_exporter)
        else:
            exporter_name = f"torch.jit.trace (torch {torch.__version__})"
            traced = torch.jit.trace(model, (example,), check_trace=False)
            with atomic_path(path) as tmp:
                torch.jit.save(traced, str(tmp))
    max_abs_diff = checked_shape = None
    if verify:
        check = example_clips(model, batch=3, segments=3, seed=1)  # not the example's shape: proves it is dynamic
        max_abs_diff = _verify(model, path, format, check)
        checked_shape = tuple(check.shape)
    sidecar = path.with_name(path.name + ".json")
    atomic_write_json(sidecar, _sidecar(model, path, format, exporter_name, opset, max_abs_diff, checked_shape))
    return ExportResult(model.config.modality, format, path, sidecar, max_abs_diff, checked_shape)


def export_model(
    model_dir: str | Path,
    format: str = "onnx",
    out_dir: str | Path | None = None,
    **options,
) -> list[ExportResult]:
    """Export every stream in `model_dir`: a two-stream folder (rgb/ and/or flow/) or one stream's folder.

    Files go next to each stream's config.json (`model.onnx` or `model.torchscript.pt`, plus `<file>.json`),
    or under `out_dir` with the same layout (a two-stream folder's fusion.json is copied there too).
    `options` are passed to `export_stream`.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MateffnetError(f"model folder not found: {model_dir}")
    if (model_dir / CONFIG_FILE).is_file():
        streams = {"": model_dir}
    else:
        streams = {name: model_dir / name for name in MODALITIES if (model_dir / name / CONFIG_FILE).is_file()}
        if not streams:
            raise MateffnetError(
                f"{model_dir}: no model found (expected {CONFIG_FILE}, or rgb/{CONFIG_FILE} and/or flow/{CONFIG_FILE})"
            )
    target = model_dir if out_dir is None else output_folder(out_dir)
    results = []
    for sub, folder in streams.items():
        model = StreamNet.from_pretrained(folder)
        results.append(export_stream(model, target / sub / EXPORT_FILES[format], format, **options))
    if out_dir is not None and (model_dir / FUSION_FILE).is_file():
        atomic_write_text(target / FUSION_FILE, (model_dir / FUSION_FILE).read_text())
    return results


def example_clips(model: StreamNet, batch: int, segments: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 clips of the shape `model` takes at its input size."""
    size = model.config.input_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, segments, model.config.in_chans, size, size), dtype=torch.uint8,
                         generator=generator)


def _export_onnx(model: StreamNet, example: torch.Tensor, path: Path, opset: int | None, exporter: str):
    """Write the ONNX file; returns (exporter description, opset actually used)."""
    import onnx

    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with advice, not deep inside torch)
        except ImportError as error:
            raise MateffnetError(
                "the dynamo ONNX exporter needs the onnxscript package: pip install onnxscript "
                "(or use the older exporter: --onnx-exporter torchscript)"
            ) from error
        dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("segments", min=1)}
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(model, (example,), None, dynamo=True, verbose=False, opset_version=opset,
                                        dynamic_shapes={INPUT_NAME: dims}, **names)
        with atomic_path(path) as tmp:
            program.save(str(tmp), external_data=False)
    else:
        axes = {INPUT_NAME: {0: "batch", 1: "segments"}, OUTPUT_NAME: {0: "batch"}}
        with atomic_path(path) as tmp:
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset, dynamic_axes=axes,
                              **names)
    used_opset = next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                      if o.domain in ("", "ai.onnx"))
    return f"torch.onnx.export, {exporter} (torch {torch.__version__})", used_opset


def _verify(model: StreamNet, path: Path, format: str, clips: torch.Tensor) -> float:
    """Max |exported − PyTorch| logit on `clips`; raises if it exceeds the tolerance."""
    with torch.no_grad():
        expected = model(clips)
    if format == "onnx":
        import onnx

        try:
            import onnxruntime
        except ImportError as error:
            raise MateffnetError("checking an ONNX export needs onnxruntime: pip install onnxruntime "
                                 "(or skip the check: --no-verify)") from error
        onnx.checker.check_model(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: clips.numpy()})[0])
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 marks TorchScript deprecated
            got = torch.jit.load(str(path), map_location="cpu")(clips)
    if got.shape != expected.shape:
        raise MateffnetError(f"{path}: exported model gave logits of shape {tuple(got.shape)} for input "
                             f"{tuple(clips.shape)}, PyTorch {tuple(expected.shape)}")
    diff = (got - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if not diff <= VERIFY_TOLERANCE * scale:
        raise MateffnetError(f"{path}: exported model differs from PyTorch by up to {diff:.3g} (tolerance "
                             f"{VERIFY_TOLERANCE * scale:.3g}) on input {tuple(clips.shape)}")
    return diff


def _sidecar(model: StreamNet, path: Path, format: str, exporter: str, opset: int | None,
             max_abs_diff: float | None, checked_shape) -> dict:
    from mateffnet import __version__

    config = model.config
    size = config.input_size
    if config.modality == "rgb":
        channels = "R, G, B (0–255)"
    else:
        channels = (f"x0, y0, x1, y1, … for {config.flow_length} consecutive flow fields, each quantised "
                    f"round(255·(v + {config.flow_bound:g}) / {2 * config.flow_bound:g}), 128 = no motion")
    return {
        "format": format,
        "file": path.name,
        "exporter": exporter,
        **({"opset": opset} if format == "onnx" else {}),
        "mateffnet_version": __version__,
        "modality": config.modality,
        "num_classes": config.num_classes,
        "class_names": config.class_names,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": ["batch", "segments", config.in_chans, size, size],
            "dynamic": ["batch", "segments"],
            "channels": channels,
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", config.num_classes],
                   "meaning": "logits; softmax gives the class probabilities (the two streams' softmaxes are "
                              "averaged for late fusion)"},
        "normalization": {"inside_graph": True, "mean": config.mean, "std": config.std,
                          "formula": "(clips - mean) / std per input channel"},
        "num_segments": config.num_segments,
        "flow_length": config.flow_length if config.modality == "flow" else None,
        "flow_bound": config.flow_bound if config.modality == "flow" else None,
        "verification": None if max_abs_diff is None else {
            "max_abs_diff": max_abs_diff,
            "input_shape": list(checked_shape),
            "runtime": "onnxruntime" if format == "onnx" else "torch.jit.load",
        },
        "model_config": config.to_dict(),
    }


def read_sidecar(path: str | Path) -> dict:
    """The sidecar JSON of an exported file (`model.onnx` or `model.onnx.json` both accepted)."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise MateffnetError(f"export sidecar not found: {path}") from error
    except json.JSONDecodeError as error:
        raise MateffnetError(f"{path}: not valid JSON ({error})") from error
