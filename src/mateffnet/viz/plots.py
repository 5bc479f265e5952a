"""Figures of a training/evaluation run: the confusion matrix and the per-epoch curves (paper Fig. 7/8).

Pure matplotlib on the Agg canvas (no pyplot state, no display needed). Every function writes a PNG
atomically and returns its path.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path

DPI = 110


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (atomically) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def plot_confusion_matrix(matrix, class_names: list[str], path: str | Path, title: str | None = None) -> Path:
    """Confusion matrix `matrix[true, predicted]` (counts) as a heat map of row-normalised rates.

    Each row (a true class) is coloured by the fraction of its videos given each predicted class, so classes
    with few test videos are as readable as big ones; the counts are written in the cells while there is
    room for them (up to 25 classes).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise MateffnetError(f"confusion matrix has shape {matrix.shape}, expected ({n}, {n}) for {n} class names")
    if (matrix < 0).any() or not np.isfinite(matrix).all():
        raise MateffnetError("confusion matrix must hold non-negative finite counts")
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(16.0, max(4.5, 0.42 * n + 2.5))
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fontsize = 9 if n <= 12 else 7 if n <= 25 else max(3, 7 - n // 40)
    ticks = np.arange(n) if n <= 60 else np.arange(0, n, math.ceil(n / 60))
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticks(ticks, [class_names[i] for i in ticks], fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 25:
        for true in range(n):
            for predicted in range(n):
                count = matrix[true, predicted]
                if count:
                    colour = "white" if rates[true, predicted] > 0.55 else "#1b1b1b"
                    ax.text(predicted, true, f"{count:g}", ha="center", va="center", fontsize=fontsize, color=colour)
    correct, total = np.trace(matrix), matrix.sum()
    accuracy = f" — top-1 {100 * correct / total:.1f}% of {total:g} videos" if total else ""
    ax.set_title(f"{title or 'Confusion matrix'}{accuracy}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Loss and accuracy per epoch from `rows` = [{"epoch": 1, "train_loss": …, "val_top1": …}, …].

    Keys containing "loss" are drawn on the left panel; accuracies (fractions 0–1; keys containing top1,
    top5, acc or mean_class, e.g. val_top1, val_top5, val_mean_class) on the right panel in percent. Other
    keys (lr, clips_per_s, epoch_time_s, …) are ignored. A key missing or None in some epochs (validation
    every other epoch) is drawn through the epochs that have it.
    """
    return save_figure(training_curves_figure(rows, title), path)


def training_curves_figure(rows: list[dict], title: str | None = None) -> Figure:
    """The figure `plot_training_curves` writes."""
    if not rows:
        raise MateffnetError("plot_training_curves needs at least one epoch row")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not _is_number(row.get("epoch")):
            raise MateffnetError(f"training curve row {i} needs a numeric 'epoch' key, got {row!r}")
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if k != "epoch" and _is_number(v)))
    loss_keys = [k for k in keys if "loss" in k]
    accuracy_keys = [k for k in keys if "loss" not in k and _is_accuracy_key(k)]
    if not loss_keys and not accuracy_keys:
        raise MateffnetError(f"training curve rows have no loss or accuracy keys (found {', '.join(keys) or 'none'})")
    panels = [(keys, label, scale) for keys, label, scale in
              ((loss_keys, "loss", 1.0), (accuracy_keys, "accuracy (%)", 100.0)) if keys]
    fig = Figure(figsize=(5.2 * len(panels), 3.8))
    for index, (panel_keys, label, scale) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for key in panel_keys:
            points = [(row["epoch"], row[key] * scale) for row in rows if _is_number(row.get(key))]
            epochs, values = zip(*points)
            style = "--" if key.startswith("train") else "-"
            ax.plot(epochs, values, style, marker="o" if len(points) <= 30 else None, markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if scale == 100.0:
            ax.set_ylim(0, 100)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_accuracy_key(key: str) -> bool:
    return any(part in key for part in ("top1", "top5", "acc", "mean_class"))
