"""The `mateffnet` command: parses arguments and dispatches. Nothing else lives here.

Each subcommand has an `_add_<name>` function that declares its arguments and a `_run_<name>` function
that hands them to `mateffnet.commands.<name>.run`, where the command's work is. The commands are imported
inside `_run_*` so that `mateffnet --help` stays fast (this module imports no torch); allowed values and
defaults come from `mateffnet.config` and `mateffnet.runtime`, where they are declared once.
"""

from __future__ import annotations

import argparse
import re
import sys

from mateffnet import __version__
from mateffnet.config import (DATA_FORMATS, DEFAULT_BOUND, FLOW_METHODS, FLOW_QUALITY, RGB_QUALITY, SPLITS, TEST_CROPS,
                              TVL1_SCHEDULES)
from mateffnet.errors import MateffnetError
from mateffnet.runtime import DEVICES

FORMAT_CHOICES = ["auto", *DATA_FORMATS]
DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"


def device_name(text: str) -> str:
    """argparse type of every --device: the names `mateffnet.runtime.resolve_device` takes."""
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}; expected auto, cpu, cuda or cuda:N")


def _check_at_least(option: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise MateffnetError(f"{option} must be at least {low}, got {value}")


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
            "2 bad arguments or annotations, or the store cannot be written (in use by another prepare, not "
            "writable, disk full: finished videos are kept, rerun once fixed); 130 interrupted (rerun to finish)."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="folder of the source videos")
    parser.add_argument("--out", required=True, metavar="STORE", help="folder for the packed files")
    parser.add_argument(
        "--format", default="auto", choices=FORMAT_CHOICES,
        help="annotation format (default: detected from --annotations; folders without it)",
    )
    parser.add_argument(
        "--annotations", metavar="PATH",
        help="UCF101 ucfTrainTestlist folder, HMDB51 split folder, Kinetics CSV (or folder of CSVs, or the "
        "class-name list for a folder-per-class copy), or a list file of 'path label' lines",
    )
    parser.add_argument("--split", type=int, default=1, choices=SPLITS, help="UCF101/HMDB51 split (default 1)")
    parser.add_argument(
        "--flow-method", default="tvl1", metavar="METHOD",
        help="optical flow method: tvl1 (default), farneback, raft, or none for RGB only",
    )
    parser.add_argument("--flow-bound", type=float, default=DEFAULT_BOUND,
                        help=f"flow clipped to +-bound px (default {DEFAULT_BOUND:g})")
    parser.add_argument(
        "--tvl1", default="fast", choices=list(TVL1_SCHEDULES),
        help="TV-L1 schedule: fast (a fixed 30 iterations per warp, no convergence test; default) or opencv "
        "(OpenCV's defaults: up to 300 iterations per warp with its epsilon rule, ~8x slower)",
    )
    parser.add_argument("--size", default="256", help="short side (default 256), WIDTHxHEIGHT (e.g. 340x256) or none")
    parser.add_argument("--max-frames", type=int, metavar="N", help="keep only the first N frames of each video")
    parser.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: one per CPU core; 0: none)")
    parser.add_argument("--device", default="auto", type=device_name, help=f"where flow is computed: {DEVICE_HELP}")
    parser.add_argument("--flow-batch", type=int, default=128, metavar="PAIRS", help="frame pairs per flow batch (default 128)")
    parser.add_argument("--rgb-quality", type=int, default=RGB_QUALITY,
                        help=f"JPEG quality of RGB frames (default {RGB_QUALITY})")
    parser.add_argument("--flow-quality", type=int, default=FLOW_QUALITY,
                        help=f"JPEG quality of flow images (default {FLOW_QUALITY})")
    parser.add_argument(
        "--flow-codec", default="lz4-near", choices=["lz4-near", "zstd-near", "lz4", "zstd", "jpeg"],
        help="how flow is stored: lz4-near (default; about JPEG's bytes, decoded as fast as lz4, every value within 1 "
        "of 255 of the quantised flow), zstd-near (the same values in ~2/3 of JPEG's bytes, slower to decode), lz4 or "
        "zstd (lossless; ~3x / ~2x JPEG's bytes), or jpeg (TSN/mmaction2's rawframes; too slow to decode to keep a "
        "fast GPU fed with the flow stream)",
    )
    parser.add_argument(
        "--shard", metavar="I/N",
        help="do every N-th video starting at I (for job arrays; under torchrun RANK/WORLD_SIZE are used)",
    )
    parser.add_argument("--verify", action="store_true", help="on a rerun, also check the checksums of finished files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    if args.workers != 0:
        from mateffnet.prepare.processes import start_worker_server

        start_worker_server()  # the workers' server imports torch beside this process's imports below
    from mateffnet.commands import prepare

    return prepare.run(
        args.src, args.out, format=args.format, annotations=args.annotations, split=args.split,
        flow_method=args.flow_method, flow_bound=args.flow_bound, tvl1=args.tvl1, size=args.size,
        max_frames=args.max_frames, workers=args.workers, device=args.device, flow_batch=args.flow_batch,
        rgb_quality=args.rgb_quality, flow_quality=args.flow_quality, flow_codec=args.flow_codec, shard=args.shard,
        verify=args.verify, progress=not args.no_progress,
    )


# ------------------------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    parser = sub.add_parser(
        "train", help="train one stream (RGB or flow) from a YAML config",
        description="Train one stream. The same command runs on one CPU, one GPU, or N GPUs/nodes under "
        "torchrun (DDP): train.batch_size is the global batch and train.lr applies to it.",
    )
    parser.add_argument("--config", metavar="FILE", help="experiment YAML (configs/…); defaults without it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set train.lr=0.005 (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="check the config, build the model, print the plan; read no video")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default and meaning")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from mateffnet.commands import train

    return train.run(args.config, args.overrides, out=args.out, resume=args.resume, dry_run=args.dry_run,
                     help_config=args.help_config, progress=not args.no_progress)


# ---------------------------------------------------------------------------------------- evaluate


def _add_evaluate(sub) -> None:
    parser = sub.add_parser(
        "evaluate", help="evaluate the RGB and/or flow stream and their fusion on a test set",
        description="Per-stream and fused top-1, top-5 and mean class accuracy (the mean of per-class "
        "top-1, which TSN prints as 'accuracy'), per-class accuracy, confusion matrices (PNG) and the raw "
        "per-video scores (scores.npz). With --scores, re-fuse saved scores without running any network.",
    )
    parser.add_argument("--model", metavar="DIR", help="two-stream folder with rgb/ and/or flow/")
    parser.add_argument("--rgb", metavar="DIR", help="RGB model folder (e.g. runs/<name>/best)")
    parser.add_argument("--flow", metavar="DIR", help="flow model folder")
    parser.add_argument("--scores", metavar="NPZ", help="re-fuse the scores.npz of an earlier evaluation")
    parser.add_argument("--data", metavar="STORE", help="folder of packed videos (mateffnet prepare --out)")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    parser.add_argument("--annotations", metavar="PATH", help="split files / CSV / list file naming the test videos")
    parser.add_argument("--split", type=int, default=1, choices=SPLITS)
    parser.add_argument("--videos", metavar="DIR", help="source video folder (folders format only)")
    parser.add_argument("--classes", metavar="FILE", help="class names, one a line (list format)")
    parser.add_argument("--segments", type=int, default=25, help="segments per video (default 25, TSN)")
    parser.add_argument("--crops", type=int, default=10, choices=TEST_CROPS, help="views per video (default 10)")
    parser.add_argument("--fusion-weights", type=float, nargs=2, default=(1.0, 1.0), metavar=("RGB", "FLOW"),
                        help="weights of the softmax average (default 1 1, the paper's; TSN: 1 1.5)")
    parser.add_argument("--tune-fusion", metavar="VAL_NPZ",
                        help="choose the flow weight on these validation scores (scores.npz of videos held out of "
                        "training, never the test set) and apply it; prints the 1:1 and 1:1.5 rows beside it")
    parser.add_argument("--batch-size", type=int, default=2, help="videos per forward pass (each with all its views)")
    parser.add_argument("--workers", type=int, help="loader processes (default: 3/4 of the CPU cores less one)")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--out", metavar="DIR", default="evaluation", help="output folder (default: evaluation)")
    parser.add_argument("--damaged", default="stop", choices=["stop", "skip"],
                        help="a damaged packed file: stop with its name (default), or skip its video, "
                        "naming and counting it beside the numbers")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    _check_at_least("--segments", args.segments, 1)
    _check_at_least("--batch-size", args.batch_size, 1)
    _check_at_least("--workers", args.workers, 0)
    from mateffnet.commands import evaluate

    return evaluate.run(
        model=args.model, rgb=args.rgb, flow=args.flow, scores=args.scores, data=args.data, format=args.format,
        annotations=args.annotations, split=args.split, videos=args.videos, classes=args.classes,
        segments=args.segments, crops=args.crops, fusion_weights=args.fusion_weights, batch_size=args.batch_size,
        workers=args.workers, device=args.device, out=args.out, progress=not args.no_progress,
        damaged=args.damaged, tune_fusion=args.tune_fusion,
    )


# --------------------------------------------------------------------------------------- reproduce


def _add_reproduce(sub) -> None:
    parser = sub.add_parser(
        "reproduce", help="train and evaluate every run of one of the paper's tables",
        description="Runs the grid of a table (skipping trained runs, resuming interrupted ones), evaluates "
        "each RGB/flow pair with the test protocol, and writes runs/<table>.md beside the paper's numbers.",
    )
    parser.add_argument("table", choices=["table2", "table3", "table4", "sthv2", "diving48", "kinetics600", "kinetics700"],
                        help="table2: UCF101, table3: HMDB51, table4: Kinetics-400 (the paper's); sthv2, diving48, "
                        "kinetics600, kinetics700: the temporal-order ablation (EfficientNet-B0 without attention, "
                        "with it, and with a learned or sinusoidal temporal encoding)")
    parser.add_argument("--data-root", required=True, metavar="DIR",
                        help="holds ucf101/, hmdb51/, kinetics400/ with store/ and the annotation folders "
                        "(see `python -m mateffnet.experiments --help`)")
    parser.add_argument("--runs", default="runs", metavar="DIR", help="where runs are written (default runs/)")
    parser.add_argument("--splits", type=int, nargs="+", choices=[1, 2, 3], help="only these splits")
    parser.add_argument("--backbones", nargs="+", choices=["resnet18", "resnet34", "resnet50", "efficientnet_b0"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key in every run")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_reproduce)


def _run_reproduce(args) -> int:
    from mateffnet.commands import reproduce

    return reproduce.run(args.table, args.data_root, runs_dir=args.runs, splits=args.splits, backbones=args.backbones,
                         overrides=args.overrides, dry_run=args.dry_run, progress=not args.no_progress)


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
    from mateffnet.commands import export

    return export.run(args.model, args.format, out=args.out, opset=args.opset, onnx_exporter=args.onnx_exporter,
                      verify=not args.no_verify)


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
    parser.add_argument("--device", default="cpu", type=device_name, help=f"{DEVICE_HELP} (default: cpu)")
    parser.add_argument("--topk", type=int, default=5, metavar="K", help="classes listed per stream (default: 5)")
    parser.set_defaults(run=_run_explain)


def _run_explain(args) -> int:
    from mateffnet.commands import explain

    _check_at_least("--segments", args.segments, 1)
    _check_at_least("--topk", args.topk, 1)
    return explain.run(args.video, args.model, args.out, segments=args.segments, flow_method=args.flow_method,
                       device=args.device, topk=args.topk)


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
    p.add_argument("--method", "--flow-method", dest="method", default="tvl1", choices=FLOW_METHODS)
    p.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND,
                   help=f"clip flow to ±BOUND px before mapping to 0–255 (default: {DEFAULT_BOUND:g})")
    p.add_argument("--batch-size", type=int, default=16,
                   help="frame pairs per flow call (default: 16; on the CPU fewer for large frames)")
    p.add_argument("--size", metavar="SIZE",
                   help="resize frames first: short side (256) or WIDTHxHEIGHT (340x256); default: the video's size")
    p.add_argument("--tvl1", default="opencv", choices=list(TVL1_SCHEDULES),
                   help="TV-L1 schedule: opencv (OpenCV's defaults; default here) or fast (a fixed 30 iterations per "
                   "warp, mateffnet.flow.TVL1_FAST, as prepare uses by default)")
    p.add_argument("--fast", action="store_true", help="deprecated spelling of --tvl1 fast")
    p.add_argument("--raft-weights", default="default", metavar="FILE",
                   help="RAFT weights: 'default' (download torchvision's), a local state-dict file, or 'random'")
    p.set_defaults(run=_run_flow)


def _run_flow(args) -> int:
    from mateffnet.commands import flow

    tvl1 = args.tvl1
    if args.fast:
        print("mateffnet flow: note: --fast is deprecated; use --tvl1 fast", file=sys.stderr)
        tvl1 = "fast"
    return flow.run(args.video, args.out, method=args.method, device=args.device, bound=args.bound,
                    batch_size=args.batch_size, tvl1=tvl1, raft_weights=args.raft_weights, size=args.size)

# ----------------------------------------------------------------------------------------- predict


def _add_predict(sub) -> None:
    parser = sub.add_parser(
        "predict", help="classify videos with a trained model (both streams and their fusion)",
        description="Decode each video, compute optical flow on the fly (GPU when present), run the stream(s) "
        "with the test protocol and print the top classes per stream and fused. Exit status 1 when a video "
        "could not be classified (the others are still reported).",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO")
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder: rgb/ and/or flow/ (or one stream)")
    parser.add_argument("--topk", type=int, default=5, help="classes listed per stream (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per video on stdout")
    parser.add_argument("--segments", type=int, default=25, help="segments per video (default 25, TSN)")
    parser.add_argument("--crops", type=int, default=1, choices=TEST_CROPS, help="views per segment (default 1)")
    parser.add_argument("--fusion-weights", type=float, nargs=2, metavar=("RGB", "FLOW"),
                        help="override the model's fusion weights")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    from mateffnet.commands import predict

    _check_at_least("--segments", args.segments, 1)
    _check_at_least("--topk", args.topk, 1)
    return predict.run(args.videos, model=args.model, topk=args.topk, json_lines=args.json, segments=args.segments,
                       crops=args.crops, fusion_weights=args.fusion_weights, device=args.device)


# -------------------------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    parser = sub.add_parser(
        "demo", help="run the whole pipeline on a synthetic dataset it generates (a few minutes on a CPU)",
        description="Generates nine classes of synthetic videos (six told apart only by motion, three only by "
        "colour), prepares them (TV-L1 flow), trains the RGB and the flow stream, evaluates both and their "
        "fusion, and writes model folders, results.json and report.html into --out.",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default demo_out, or demo_order_out with --order)")
    parser.add_argument("--order", action="store_true",
                        help="the temporal-order ablation instead: four more classes that only the order of frames "
                        "tells apart, both streams trained without and with a temporal position encoding")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the videos and of training (default 0)")
    parser.add_argument("--videos-per-class", type=int, default=16, help="default 16 (12 train, 4 test)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per stream (default 10)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from mateffnet.commands import demo

    return demo.run(args.out, order=args.order, device=args.device, seed=args.seed,
                    videos_per_class=args.videos_per_class, epochs=args.epochs, progress=not args.no_progress)


def _add_env(sub) -> None:
    parser = sub.add_parser(
        "env",
        help="print the versions and code paths this machine uses (paste into a bug report)",
        description="Versions of Python, mateffnet, torch (CUDA build, GPU), torchvision, timm, PyAV and its "
        "FFmpeg, Triton, numpy, OpenCV, and what decoding, optical flow and JPEG run on here.",
    )
    parser.set_defaults(run=_run_env)


def _run_env(args) -> int:
    from mateffnet.commands.env import run_env

    return run_env()


# ---------------------------------------------------------------------------------------- timeline


def _add_timeline(sub) -> None:
    parser = sub.add_parser(
        "timeline", help="recognise actions over time in long videos (windows, both streams, fused)",
        description="Slide a window over each video (decoded as a stream: memory bounded by the window), score "
        "every window with both streams as predict scores a video (flow computed once per frame pair) and write "
        "OUT/<video>/windows.jsonl (top-k per stream and fused, start/end seconds), timeline.png, timeline.html "
        "and, with --merge, segments.json. Exit status 1 when a video could not be read (the others are still done).",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO")
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder: rgb/ and/or flow/ (or one stream)")
    parser.add_argument("--window", type=float, default=4.0, metavar="SECONDS", help="window length (default 4)")
    parser.add_argument("--stride", type=float, default=1.0, metavar="SECONDS", help="between window starts (default 1)")
    parser.add_argument("--segments", type=int, default=8, metavar="T", help="test segments per window (default 8)")
    parser.add_argument("--crops", type=int, default=1, choices=TEST_CROPS, help="views per segment (default 1)")
    parser.add_argument("--topk", type=int, default=5, help="classes kept per window and stream (default 5)")
    parser.add_argument("--batch", type=int, default=8, metavar="WINDOWS", help="windows per forward pass (default 8)")
    parser.add_argument("--merge", type=float, metavar="THRESHOLD",
                        help="merge consecutive windows of the same fused top-1 class with probability >= THRESHOLD "
                        "into labelled segments (segments.json)")
    parser.add_argument("--min-segment", type=float, default=0.0, metavar="SECONDS",
                        help="with --merge: drop segments shorter than this and join their neighbours (default 0)")
    parser.add_argument("--flow-method", metavar="NAME", help="flow method (default: the flow stream's own)")
    parser.add_argument("--out", default="timeline", metavar="DIR", help="output folder (default: timeline)")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_timeline)


def _run_timeline(args) -> int:
    from mateffnet.commands.timeline import TimelineOptions, run_timeline

    if args.segments < 1 or args.batch < 1:
        raise MateffnetError(f"--segments and --batch must be at least 1, got {args.segments} and {args.batch}")
    options = TimelineOptions(window=args.window, stride=args.stride, segments=args.segments, crops=args.crops,
                              topk=args.topk, batch=args.batch, merge=args.merge, min_segment=args.min_segment, flow_method=args.flow_method,
                              flow_params=None)
    _, failures = run_timeline(args.videos, args.model, args.out, options, args.device, progress=not args.no_progress)
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------- watch


def _add_watch(sub) -> None:
    parser = sub.add_parser(
        "watch", help="live recognition from a camera, a network stream or a file played at its real rate",
        description="Keep the last --window seconds of SOURCE in a ring and print a prediction (both streams, fused) "
        "every --every seconds with its latency. SOURCE: /dev/videoN (FFmpeg's v4l2), rtsp://, http://, udp://... "
        "(whatever FFmpeg opens) or a file with --realtime. Frames are dropped rather than fall behind (and counted). "
        "Exit status 0 when the source ends, 1 when it breaks, 2 when it cannot be opened.",
    )
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder: rgb/ and/or flow/ (or one stream)")
    parser.add_argument("--window", type=float, default=4.0, metavar="SECONDS", help="seconds per prediction (default 4)")
    parser.add_argument("--every", type=float, default=1.0, metavar="SECONDS", help="between predictions (default 1)")
    parser.add_argument("--segments", type=int, default=8, metavar="T", help="test segments per window (default 8)")
    parser.add_argument("--topk", type=int, default=3, help="classes per stream in --json lines (default 3)")
    parser.add_argument("--realtime", action="store_true", help="play a file at its real rate (needed for files)")
    parser.add_argument("--reconnect", type=int, default=0, metavar="N",
                        help="reopen a network source that ends or breaks, up to N times")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a network source that sends nothing this long has ended (default 10)")
    parser.add_argument("--fps", type=float, help="frame rate of a source that declares none")
    parser.add_argument("--json", action="store_true", help="one JSON object per prediction on stdout")
    parser.add_argument("--out", metavar="FILE", help="also write the predictions as JSON lines to FILE")
    parser.add_argument("--max-predictions", type=int, metavar="N", help="stop after N predictions")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.set_defaults(run=_run_watch)


def _run_watch(args) -> int:
    from mateffnet.commands.watch import WatchOptions, run_watch

    options = WatchOptions(window=args.window, every=args.every, segments=args.segments, topk=args.topk,
                           realtime=args.realtime, reconnect=args.reconnect, timeout=args.timeout, fps=args.fps,
                           json=args.json, out=args.out, max_predictions=args.max_predictions)
    return run_watch(args.source, args.model, options, args.device)


# ---------------------------------------------------------------------------------------- features


def _add_features(sub) -> None:
    parser = sub.add_parser(
        "features", help="two-stream snippet features for temporal action localisation (ActionFormer layout)",
        description="For every video under DATA (video files, or the packed videos of a store), one "
        "OUT/<stream>/<video id>.npy of shape (snippets, D) float32 at a fixed frame stride, and OUT/<video id>.json "
        "with the time of each row (the snippet's centre). Reruns skip finished videos; failures are reported in "
        "OUT/report.json. See `mateffnet.commands.features` for the layout.",
    )
    parser.add_argument("data", metavar="DATA", help="folder of videos, or a packed store (mateffnet prepare --out)")
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder: rgb/ and/or flow/")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--stride", type=int, default=4, metavar="FRAMES", help="frames between snippets (default 4)")
    parser.add_argument("--streams", nargs="+", default=["rgb", "flow"], choices=["rgb", "flow"])
    parser.add_argument("--features", default="pooled", choices=["pooled", "attended"],
                        help="pooled: the backbone's pooled features (default); attended: the 512-d tokens after Fc "
                        "and self-attention over neighbouring snippets")
    parser.add_argument("--concat", action="store_true", help="also write OUT/rgb_flow/<id>.npy ([rgb | flow])")
    parser.add_argument("--batch", type=int, default=32, metavar="SNIPPETS", help="snippets per forward pass (default 32)")
    parser.add_argument("--shard", metavar="I/N", help="every N-th video starting at I (default: torchrun's RANK/WORLD_SIZE)")
    parser.add_argument("--device", default="auto", type=device_name, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_features)


def _run_features(args) -> int:
    from mateffnet.commands.features import FeatureOptions, extract_features
    from mateffnet.prepare.options import parse_shard

    options = FeatureOptions(stride=args.stride, streams=tuple(dict.fromkeys(args.streams)), features=args.features,
                             concat=args.concat, batch=args.batch, shard=parse_shard(args.shard) if args.shard else None)
    report = extract_features(args.data, args.model, args.out, options, args.device, progress=not args.no_progress)
    print(report.summary())
    return 1 if report.failed else 0


_SUBCOMMANDS = [_add_demo, _add_prepare, _add_flow, _add_train, _add_evaluate, _add_reproduce, _add_predict, _add_explain,
                _add_export, _add_env, _add_timeline, _add_watch, _add_features]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MateffnetError as error:
        print(f"mateffnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from mateffnet.fileio import WRITE_ERRNOS, os_error_line

        if error.errno not in WRITE_ERRNOS:
            raise
        print(f"mateffnet {args.command}: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mateffnet {args.command}: interrupted", file=sys.stderr)
        return 130
