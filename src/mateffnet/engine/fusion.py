"""Choosing the RGB:flow fusion weight honestly: on validation scores, never on the test scores.

`tune_flow_weight(validation_scores, validation_labels)` tries flow:RGB weight ratios on a grid
(`FLOW_WEIGHT_GRID`, RGB weight 1) and keeps the one with the best validation top-1 (ties: the ratio
closest to the paper's 1:1). It is given the validation scores only; `fusion_table` then applies the chosen
weight to the test scores, beside the paper's 1:1 and TSN's 1:1.5. The validation videos must be held out
of the training list (scores of videos the streams were trained on favour whichever stream overfits most):
`check_disjoint` refuses validation and test scores that share a video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mateffnet.errors import MateffnetError

FLOW_WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(0, 81))  # flow weight 0 … 4 for an RGB weight of 1
REFERENCE_WEIGHTS = {"paper 1:1": (1.0, 1.0), "TSN 1:1.5": (1.0, 1.5)}


@dataclass(frozen=True)
class FusionChoice:
    weights: tuple[float, float]  # (rgb, flow)
    validation_top1: float
    validation_videos: int


def tune_flow_weight(validation_scores: dict[str, np.ndarray], validation_labels: np.ndarray,
                     grid: tuple[float, ...] = FLOW_WEIGHT_GRID) -> FusionChoice:
    """The (1, w) weights whose fused top-1 on the validation scores is best (ties: w closest to 1)."""
    from mateffnet.engine.scoring import fused_scores

    missing = [name for name in ("rgb", "flow") if name not in validation_scores]
    if missing:
        raise MateffnetError(f"tuning the fusion weight needs validation scores of both streams; missing {', '.join(missing)}")
    labels = np.asarray(validation_labels)
    if len(labels) == 0:
        raise MateffnetError("tuning the fusion weight needs at least one validation video")
    best = None
    for flow_weight in grid:
        weights = (1.0, float(flow_weight))
        top1 = float((fused_scores(validation_scores, weights).argmax(1) == labels).mean())
        key = (top1, -abs(flow_weight - 1.0))
        if best is None or key > best[0]:
            best = (key, weights, top1)
    return FusionChoice(best[1], best[2], len(labels))


def check_disjoint(validation_ids: list[str], test_ids: list[str]) -> None:
    shared = sorted(set(validation_ids) & set(test_ids))
    if shared:
        raise MateffnetError(
            f"the validation scores share {len(shared)} video(s) with the test scores (e.g. {shared[0]}): tune the "
            "fusion weight on videos held out of both training and testing")


def fusion_table(choice: FusionChoice, test_scores: dict[str, np.ndarray], test_labels: np.ndarray,
                 class_names: list[str]) -> dict[str, dict]:
    """Test metrics of the fusion at the tuned weight and at the reference weights: row name → metrics."""
    from mateffnet.engine.scoring import fused_scores
    from mateffnet.engine.metrics import classification_metrics

    rows = {f"tuned 1:{choice.weights[1]:g}": choice.weights, **REFERENCE_WEIGHTS}
    table = {}
    for name, weights in rows.items():
        metrics = classification_metrics(fused_scores(test_scores, weights), test_labels, len(class_names))
        table[name] = {"weights": {"rgb": weights[0], "flow": weights[1]}, **metrics.summary()}
    return table


def format_fusion_table(choice: FusionChoice, table: dict[str, dict]) -> str:
    lines = [f"fusion weight tuned on {choice.validation_videos} validation videos (not the test set): rgb 1 : flow "
             f"{choice.weights[1]:g} (validation top-1 {100 * choice.validation_top1:.2f}%)",
             f"{'fused, weights':<16} {'top-1':>7} {'top-5':>7} {'mean class':>11}   (test set)"]
    for name, m in table.items():
        lines.append(f"{name:<16} {100 * m['top1']:>6.2f}% {100 * m['top5']:>6.2f}% {100 * m['mean_class']:>10.2f}%")
    return "\n".join(lines)


def tuned_fusion_report(choice: FusionChoice, source, validation_ids: list[str], validation_classes: list[str],
                        test_ids: list[str], class_names: list[str], test_scores: dict[str, np.ndarray],
                        test_labels: np.ndarray, out_dir) -> str:
    """Check the validation scores (`source`) fit the test scores, write out_dir/fusion_tuning.json, return the table."""
    from pathlib import Path

    from mateffnet.fileio import atomic_write_json

    if list(validation_classes) != list(class_names):
        raise MateffnetError(f"{source}: its classes differ from the test scores' classes")
    check_disjoint(validation_ids, test_ids)
    table = fusion_table(choice, test_scores, test_labels, class_names)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "fusion_tuning.json", {
        "validation_scores": str(source), "validation_videos": choice.validation_videos,
        "chosen_weights": {"rgb": choice.weights[0], "flow": choice.weights[1]},
        "validation_top1": choice.validation_top1, "test": table})
    return format_fusion_table(choice, table)
