"""The `mateffnet` command: parses arguments, calls the library, prints. Nothing else lives here.

Each subcommand has an `_add_<name>` function that declares its arguments and a `_run_<name>`
function that does the work; library modules are imported inside `_run_*` so that
`mateffnet --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from mateffnet import __version__
from mateffnet.errors import MateffnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mateffnet",
        description="Two-stream (RGB + optical flow) action recognition with MAT-EffNet.",
    )
    parser.add_argument("--version", action="version", version=f"mateffnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MateffnetError as error:
        print(f"mateffnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mateffnet {args.command}: interrupted", file=sys.stderr)
        return 130


def _add_export(sub) -> None:
    parser = sub.add_parser(
        "export",
        help="export trained streams to ONNX or TorchScript",
        description="Export each stream of a model folder (a two-stream folder with rgb/ and flow/, or one "
        "stream's folder) to ONNX or TorchScript: input `clips` uint8 (batch, segments, C, H, W) with dynamic "
        "batch and segment count, output `logits`; normalisation is inside the graph. Each file gets a JSON "
        "sidecar (<file>.json) with class names, input size, normalisation and segment count, and is checked "
        "against PyTorch (onnxruntime / torch.jit.load) on another batch and segment count.",
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder (rgb/ and/or flow/, or one stream)")
    parser.add_argument("--format", nargs="+", choices=("onnx", "torchscript"), default=["onnx"],
                        help="one or both formats (default: onnx)")
    parser.add_argument("--out", metavar="DIR", help="write here (same layout) instead of next to each stream's weights")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--onnx-exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch's dynamo-based exporter (default; needs onnxscript) or the older tracing one")
    parser.add_argument("--no-verify", action="store_true", help="skip running the exported file against PyTorch")
    parser.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from mateffnet.export import export_model

    rows = []
    for format in dict.fromkeys(args.format):
        results = export_model(args.model, format, args.out, opset=args.opset, onnx_exporter=args.onnx_exporter,
                               verify=not args.no_verify)
        rows += [(r.stream, r.format, str(r.path), f"{r.path.stat().st_size / 2**20:.1f}",
                  "not checked" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}") for r in results]
    header = ("stream", "format", "file", "MiB", "max |exported - pytorch|")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


_SUBCOMMANDS.append(_add_export)


def _add_explain(sub) -> None:
    parser = sub.add_parser(
        "explain",
        help="draw a model's attention over one video (the paper's Fig. 9)",
        description="Sample VIDEO as at test time (T evenly spaced segments), run each stream of the model, and "
        "write per stream a figure of its self-attention (between segments per head; heat maps over each frame "
        "for a model with spatio-temporal attention tokens) and explain.json with the top classes.",
    )
    parser.add_argument("video", metavar="VIDEO")
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder (rgb/ and/or flow/, or one stream)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and explain.json")
    parser.add_argument("--segments", type=int, metavar="T", help="segments to sample (default: the model's num_segments)")
    parser.add_argument("--flow-method", metavar="NAME", help="optical flow method for the flow stream (default: compute_flow's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--topk", type=int, default=5, metavar="K", help="classes listed per stream (default: 5)")
    parser.set_defaults(run=_run_explain)


def _run_explain(args) -> int:
    from mateffnet.viz.explain import explain_video

    if args.segments is not None and args.segments < 1:
        raise MateffnetError(f"--segments must be at least 1, got {args.segments}")
    result = explain_video(args.video, args.model, args.out, segments=args.segments, flow_method=args.flow_method,
                           device=args.device, topk=args.topk)
    for stream, top in result.predictions.items():
        print(f"{stream:>5}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    for stream, path in result.figures.items():
        print(f"{stream} attention: {path}")
    print(f"summary: {result.summary}")
    return 0


_SUBCOMMANDS.append(_add_explain)
