"""`mateffnet evaluate`: per-stream and fused accuracy of model folders on a test set, or saved scores re-fused."""

from __future__ import annotations

from pathlib import Path

from mateffnet.config import MODALITIES, DataConfig
from mateffnet.engine import fusion
from mateffnet.engine.scoring import evaluate_streams, load_scores, summarize, write_outputs
from mateffnet.errors import MateffnetError
from mateffnet.fileio import output_folder
from mateffnet.io.annotations import detect_format
from mateffnet.models.streamnet import CONFIG_FILE


def model_folders(model: str | None, rgb: str | None, flow: str | None) -> dict[str, Path]:
    """{stream: folder} from a two-stream folder (its rgb/ and flow/) and/or one folder per stream."""
    folders = {}
    if model:
        folders = {name: Path(model) / name for name in MODALITIES if (Path(model) / name / CONFIG_FILE).is_file()}
        if not folders:
            raise MateffnetError(f"--model {model}: no rgb/ or flow/ model folder inside")
    folders.update({name: Path(folder) for name, folder in (("rgb", rgb), ("flow", flow)) if folder})
    if not folders:
        raise MateffnetError("give --model DIR, or --rgb DIR and/or --flow DIR (or --scores NPZ)")
    return folders


def refuse(scores_file: str, out: str, weights: tuple[float, float]) -> dict:
    """Fuse the per-stream scores of an earlier evaluation again with `weights`; writes `out` like evaluate."""
    ids, labels, class_names, scores = load_scores(scores_file)
    scores = {k: v for k, v in scores.items() if k in MODALITIES}
    results = summarize(scores, labels, class_names, weights, title=f"re-fused {scores_file}")
    write_outputs(out, results, scores, labels, ids)
    return results


def format_summary(results: dict) -> str:
    """A small text table: rows = streams, columns = top-1, top-5, mean class accuracy."""
    lines = [f"{'stream':<8} {'top-1':>7} {'top-5':>7} {'mean class':>11}   ({results['videos']} videos; "
             f"top-1/top-5 = video accuracy, mean class = mean of per-class top-1)"]
    for name, m in results["streams"].items():
        lines.append(f"{name:<8} {100 * m['top1']:>6.2f}% {100 * m['top5']:>6.2f}% {100 * m['mean_class']:>10.2f}%")
    damaged = results.get("damaged_videos") or []
    if damaged:
        shown = ", ".join(damaged[:5]) + (f", … ({len(damaged) - 5} more)" if len(damaged) > 5 else "")
        lines.append(f"NOTE: these numbers leave out {len(damaged)} video(s) whose packed files are damaged: {shown} "
                     "(redo them with mateffnet prepare ... --verify)")
    return "\n".join(lines)




def run(*, model: str | None, rgb: str | None, flow: str | None, scores: str | None, data: str | None, format: str,
        annotations: str | None, split: int, videos: str | None, classes: str | None, segments: int, crops: int,
        fusion_weights: tuple[float, float], batch_size: int, workers: int | None, device: str, out: str,
        progress: bool, damaged: str = "stop", tune_fusion: str | None = None) -> int:
    output_folder(out)
    weights, choice = tuple(fusion_weights), None
    if tune_fusion:  # the flow weight is chosen on validation scores only; the test scores are not looked at
        val_ids, val_labels, val_classes, val_scores = load_scores(tune_fusion)
        choice = fusion.tune_flow_weight({k: v for k, v in val_scores.items() if k in MODALITIES}, val_labels)
        weights = choice.weights

    def tuning_table(test_ids, class_names, test_scores, test_labels) -> str:
        return fusion.tuned_fusion_report(choice, tune_fusion, val_ids, val_classes, test_ids, class_names,
                                          {k: v for k, v in test_scores.items() if k in MODALITIES}, test_labels, out)

    if scores:
        tuning = tuning_table(*_scores_for_tuning(scores)) if choice is not None else None
        print(format_summary(refuse(scores, out, weights)))
        if tuning:
            print(tuning)
        return 0
    folders = model_folders(model, rgb, flow)
    if not data:
        raise MateffnetError("--data STORE is needed (the folder mateffnet prepare wrote)")
    data_config = DataConfig(format=detect_format(annotations) if format == "auto" else format, store=data,
                             annotations=annotations, split=split, videos=videos, classes=classes)
    results = evaluate_streams(data_config, folders, out, weights, segments, crops, batch_size, device, workers,
                               progress=progress, damaged=damaged)
    print(format_summary(results))
    if choice is not None:
        print(tuning_table(*_scores_for_tuning(Path(out) / "scores.npz")))
    print(f"written to {out}/: metrics.json, per_class.csv, confusion_*.png, scores.npz")
    return 0


def _scores_for_tuning(path) -> tuple:
    ids, labels, class_names, scores = load_scores(path)
    return ids, class_names, scores, labels
