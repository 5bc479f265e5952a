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


# ----------------------------------------------------------------------------------------------
# mateffnet flow VIDEO --out DIR


def _add_flow(sub) -> None:
    p = sub.add_parser(
        "flow",
        help="compute the optical flow of one video and write it as images to inspect",
        description="Optical flow between consecutive frames of VIDEO, written to DIR as the quantised "
        "x/y JPEGs of the TSN convention (flow_x_00001.jpg, flow_y_00001.jpg, 1-based) and colour-coded "
        "flow (color_00001.jpg, Middlebury colour wheel), plus flow.json with the bound.",
    )
    p.add_argument("video", help="video file (anything PyAV/FFmpeg decodes)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files already there are kept)")
    p.add_argument("--method", "--flow-method", dest="method", default="tvl1", choices=["tvl1", "farneback", "raft"])
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--bound", type=float, default=20.0, help="clip flow to ±BOUND px before mapping to 0–255 (default: 20)")
    p.add_argument("--batch-size", type=int, default=16, help="frame pairs per flow call (default: 16)")
    p.add_argument("--fast", action="store_true",
                   help="TV-L1 with a fixed 30 iterations per warp (mateffnet.flow.TVL1_FAST) instead of OpenCV's defaults")
    p.add_argument("--raft-weights", default="default", metavar="FILE",
                   help="RAFT weights: 'default' (download torchvision's), a local state-dict file, or 'random'")
    p.set_defaults(run=_run_flow)


def _run_flow(args) -> int:
    from mateffnet.flow import TVL1_FAST
    from mateffnet.flow.video import write_flow_images

    params = {}
    if args.method == "tvl1" and args.fast:
        params = dict(TVL1_FAST)
    if args.method == "raft":
        params = {"weights": None if args.raft_weights == "random" else args.raft_weights}
    summary = write_flow_images(
        args.video, args.out, method=args.method, device=args.device, bound=args.bound,
        batch_size=args.batch_size, params=params,
    )
    rate = summary.computed / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{summary.video}: {summary.pairs} flow fields in {summary.out_dir} "
        f"({summary.computed} computed, {summary.pairs - summary.computed} already there; "
        f"{summary.method} on {summary.device}, {rate:.1f} pairs/s; bound ±{args.bound:g} px)"
    )
    return 0


_SUBCOMMANDS.append(_add_flow)
