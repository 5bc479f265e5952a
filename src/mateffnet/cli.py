"""The `mateffnet` command: parses arguments, calls the library, prints. Nothing else lives here.

Each subcommand has an `_add_<name>` function that declares its arguments and a `_run_<name>`
function that does the work; library modules are imported inside `_run_*` so that
`mateffnet --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mateffnet import __version__
from mateffnet.config import DATA_FORMATS
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
        "--format", default="auto", choices=["auto", *DATA_FORMATS],
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
    parser.add_argument(
        "--tvl1", default="fast", choices=["fast", "opencv"],
        help="TV-L1 schedule: fast (a fixed 30 iterations per warp, no convergence test; default) or opencv "
        "(OpenCV's defaults: up to 300 iterations per warp with its epsilon rule, ~8x slower)",
    )
    parser.add_argument("--size", default="256", help="short side (default 256), WIDTHxHEIGHT (e.g. 340x256) or none")
    parser.add_argument("--max-frames", type=int, metavar="N", help="keep only the first N frames of each video")
    parser.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: one per CPU core; 0: none)")
    parser.add_argument("--device", default="auto", help="where flow is computed: auto, cpu, cuda or cuda:N")
    parser.add_argument("--flow-batch", type=int, default=128, metavar="PAIRS", help="frame pairs per flow batch (default 128)")
    parser.add_argument("--rgb-quality", type=int, default=90, help="JPEG quality of RGB frames (default 90)")
    parser.add_argument("--flow-quality", type=int, default=95, help="JPEG quality of flow images (default 95)")
    parser.add_argument(
        "--flow-codec", default="jpeg", choices=["jpeg", "lz4"],
        help="how flow is stored: jpeg (default; compact, as TSN/mmaction2) or lz4 (lossless, ~3x the flow's bytes, "
        "~3x cheaper to decode: for keeping a fast GPU fed with the flow stream)",
    )
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
        flow_params={} if args.tvl1 == "opencv" or args.flow_method != "tvl1" else None,
        device=args.device,
        workers=args.workers,
        max_frames=args.max_frames,
        rgb_quality=args.rgb_quality,
        flow_quality=args.flow_quality,
        flow_codec=args.flow_codec,
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
    from mateffnet.config import describe_schema, load_config

    if args.help_config:
        print(describe_schema())
        return 0
    config = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / config.name)
    if args.dry_run:
        from mateffnet.engine.plan import describe_plan

        print(describe_plan(config, out))
        return 0
    from mateffnet.engine.train import train

    result = train(config, out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"best validation top-1 {100 * result.best_top1:.2f}% (epoch {result.best_epoch})" if result.best_top1 is not None else "no validation set"
        print(f"done: {len(result.history)} epochs, {best}; model folders {out / 'best'} and {out / 'last'}")
    return 0


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
    parser.add_argument("--format", default="auto", choices=["auto", *DATA_FORMATS])
    parser.add_argument("--annotations", metavar="PATH", help="split files / CSV / list file naming the test videos")
    parser.add_argument("--split", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--videos", metavar="DIR", help="source video folder (folders format only)")
    parser.add_argument("--classes", metavar="FILE", help="class names, one a line (list format)")
    parser.add_argument("--segments", type=int, default=25, help="segments per video (default 25, TSN)")
    parser.add_argument("--crops", type=int, default=10, choices=[1, 3, 10], help="views per video (default 10)")
    parser.add_argument("--fusion-weights", type=float, nargs=2, default=(1.0, 1.0), metavar=("RGB", "FLOW"),
                        help="weights of the softmax average (default 1 1, the paper's; TSN: 1 1.5)")
    parser.add_argument("--tune-fusion", metavar="VAL_NPZ",
                        help="choose the flow weight on these validation scores (scores.npz of videos held out of "
                        "training, never the test set) and apply it; prints the 1:1 and 1:1.5 rows beside it")
    parser.add_argument("--batch-size", type=int, default=2, help="videos per forward pass (each with all its views)")
    parser.add_argument("--workers", type=int, help="loader processes (default: 3/4 of the CPU cores less one)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", metavar="DIR", default="evaluation", help="output folder (default: evaluation)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from mateffnet.engine import evaluate as ev

    weights = tuple(args.fusion_weights)
    choice = None
    if args.tune_fusion:
        from mateffnet.engine.fusion import tune_flow_weight, tuned_fusion_report

        val_ids, val_labels, val_classes, val_scores = ev.load_scores(args.tune_fusion)
        choice = tune_flow_weight({k: v for k, v in val_scores.items() if k in ev.STREAMS}, val_labels)
        weights = choice.weights
    if args.scores:
        ids, labels, class_names, scores = ev.load_scores(args.scores)
        scores = {k: v for k, v in scores.items() if k in ev.STREAMS}
        results = ev.summarize(scores, labels, class_names, weights, title=f"re-fused {args.scores}")
        tuning = None if choice is None else tuned_fusion_report(choice, args.tune_fusion, val_ids, val_classes, ids,
                                                                 class_names, scores, labels, args.out)
        ev.write_outputs(args.out, results, scores, labels, ids)
        print(ev.format_summary(results))
        if tuning:
            print(tuning)
        return 0
    models = {}
    if args.model:
        for name in ev.STREAMS:
            if (Path(args.model) / name / "config.json").is_file():
                models[name] = Path(args.model) / name
        if not models:
            raise MateffnetError(f"--model {args.model}: no rgb/ or flow/ model folder inside")
    for name in ev.STREAMS:
        if getattr(args, name):
            models[name] = Path(getattr(args, name))
    if not models:
        raise MateffnetError("give --model DIR, or --rgb DIR and/or --flow DIR (or --scores NPZ)")
    if not args.data:
        raise MateffnetError("--data STORE is needed (the folder mateffnet prepare wrote)")
    from mateffnet.config import DataConfig
    from mateffnet.data.annotations import detect_format

    data = DataConfig(format=detect_format(args.annotations) if args.format == "auto" else args.format,
                      store=args.data, annotations=args.annotations, split=args.split, videos=args.videos,
                      classes=args.classes)
    results = ev.evaluate_streams(data, models, args.out, weights, args.segments, args.crops, args.batch_size,
                                  args.device, args.workers, progress=not args.no_progress)
    print(ev.format_summary(results))
    if choice is not None:
        ids, labels, class_names, scores = ev.load_scores(Path(args.out) / "scores.npz")
        scores = {k: v for k, v in scores.items() if k in ev.STREAMS}
        print(tuned_fusion_report(choice, args.tune_fusion, val_ids, val_classes, ids, class_names, scores, labels,
                                  args.out))
    print(f"written to {args.out}/: metrics.json, per_class.csv, confusion_*.png, scores.npz")
    return 0


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
    from mateffnet.engine.reproduce import reproduce

    reproduce(args.table, args.data_root, args.runs, args.splits, args.backbones, args.overrides, args.dry_run,
              progress=not args.no_progress)
    return 0


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
    parser.add_argument("--crops", type=int, default=1, choices=[1, 3, 10], help="views per segment (default 1)")
    parser.add_argument("--fusion-weights", type=float, nargs=2, metavar=("RGB", "FLOW"),
                        help="override the model's fusion weights")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    import json

    from mateffnet.engine.distributed import resolve_device
    from mateffnet.inference import predict
    from mateffnet.models import TwoStreamNet

    device = resolve_device(args.device)
    model = TwoStreamNet.from_pretrained(args.model, map_location=device)
    if args.fusion_weights:
        model.weights = tuple(args.fusion_weights)
    names = model.class_names or [str(i) for i in range(next(iter(model.streams.values())).config.num_classes)]
    failed = 0
    for prediction in predict(args.videos, model, args.segments, args.crops, device):
        if prediction.error is not None:
            failed += 1
            print(f"mateffnet predict: error: {prediction.error}", file=sys.stderr)
            continue
        top = prediction.top(names, args.topk)
        if args.json:
            print(json.dumps({"video": prediction.video, **top}), flush=True)
        else:
            print(prediction.video)
            for stream, entries in top.items():
                print(f"  {stream:<6} " + ", ".join(f"{e['label']} {100 * e['prob']:.1f}%" for e in entries))
    return 1 if failed else 0


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
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the videos and of training (default 0)")
    parser.add_argument("--videos-per-class", type=int, default=16, help="default 16 (12 train, 4 test)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per stream (default 10)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from mateffnet.demo import run_demo, run_order_demo

    if args.order:
        run_order_demo(args.out or "demo_order_out", args.device, args.seed, args.videos_per_class, args.epochs,
                       progress=not args.no_progress)
        return 0
    run_demo(args.out or "demo_out", args.device, args.seed, args.videos_per_class, args.epochs,
             progress=not args.no_progress)
    return 0


_SUBCOMMANDS = [_add_demo, _add_prepare, _add_flow, _add_train, _add_evaluate, _add_reproduce, _add_predict, _add_explain,
                _add_export]


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
