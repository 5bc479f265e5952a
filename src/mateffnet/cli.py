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


def _add_prepare(sub) -> None:
    parser = sub.add_parser(
        "prepare",
        help="decode videos, compute optical flow, write one packed file per video",
        description=(
            "Prepare every video the annotations list (UCF101/HMDB51: the train and test lists of --split; "
            "folders: every video file under SRC) into STORE: decoded once, resized, optical flow computed, "
            "RGB frames and quantised flow (TSN, +-bound px -> 0-255) written as JPEGs into STORE/<video id>.mfv. "
            "Reruns skip finished videos and redo half-written ones. A report is printed and written to "
            "STORE/report.json."
        ),
        epilog=(
            "exit status: 0 every listed video present on disk was prepared (missing ones are only reported); "
            "1 some videos failed (they are named in the report; the good ones are kept); "
            "2 bad arguments or annotations; 130 interrupted (rerun to finish)."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="folder of the source videos")
    parser.add_argument("--out", required=True, metavar="STORE", help="folder for the packed files")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "ucf101", "hmdb51", "kinetics400", "list", "folders"],
        help="annotation format (default: detected from --annotations; folders without it)",
    )
    parser.add_argument(
        "--annotations", metavar="PATH",
        help="UCF101 ucfTrainTestlist folder, HMDB51 split folder, Kinetics CSV (or folder of CSVs, or the "
        "class-name list for a folder-per-class copy), or a list file of 'path label' lines",
    )
    parser.add_argument("--split", type=int, default=1, choices=[1, 2, 3], help="UCF101/HMDB51 split (default 1)")
    parser.add_argument(
        "--flow-method", default="tvl1", metavar="METHOD",
        help="optical flow method: tvl1 (default), farneback, raft, or none for RGB only",
    )
    parser.add_argument("--flow-bound", type=float, default=20.0, help="flow clipped to +-bound px (default 20)")
    parser.add_argument("--size", default="256", help="short side (default 256), WIDTHxHEIGHT (e.g. 340x256) or none")
    parser.add_argument("--max-frames", type=int, metavar="N", help="keep only the first N frames of each video")
    parser.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: one per CPU core; 0: none)")
    parser.add_argument("--device", default="auto", help="where flow is computed: auto, cpu, cuda or cuda:N")
    parser.add_argument("--flow-batch", type=int, default=128, metavar="PAIRS", help="frame pairs per flow batch (default 128)")
    parser.add_argument("--rgb-quality", type=int, default=90, help="JPEG quality of RGB frames (default 90)")
    parser.add_argument("--flow-quality", type=int, default=95, help="JPEG quality of flow images (default 95)")
    parser.add_argument(
        "--shard", metavar="I/N",
        help="do every N-th video starting at I (for job arrays; under torchrun RANK/WORLD_SIZE are used)",
    )
    parser.add_argument("--verify", action="store_true", help="on a rerun, also check the checksums of finished files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    from mateffnet.data.decode import parse_size
    from mateffnet.data.prepare import PrepareOptions, parse_shard, prepare_dataset

    options = PrepareOptions(
        size=parse_size(args.size),
        flow_method=args.flow_method,
        flow_bound=args.flow_bound,
        device=args.device,
        workers=args.workers,
        max_frames=args.max_frames,
        rgb_quality=args.rgb_quality,
        flow_quality=args.flow_quality,
        flow_batch=args.flow_batch,
        shard=parse_shard(args.shard) if args.shard else None,
        verify=args.verify,
    )
    report = prepare_dataset(
        args.src, args.out, args.format, args.annotations, args.split, options, progress=not args.no_progress
    )
    print(report.summary())
    print(f"report: {report.report_path}")
    return report.exit_status


_SUBCOMMANDS: list = [_add_prepare]


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
