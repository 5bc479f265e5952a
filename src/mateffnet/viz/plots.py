"""Figures written as PNG: training curves (the paper's Fig. 7/8)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mateffnet.fileio import atomic_path  # noqa: E402


def plot_training_curves(rows: list[dict], path: str | Path) -> Path:
    """Training loss and validation accuracy per epoch from rows like {"epoch": 1, "train_loss": …, "val_top1": …}."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [r["epoch"] for r in rows]
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    validated = [r for r in rows if r.get("val_top1") is not None]
    acc_ax.plot([r["epoch"] for r in validated], [100 * r["val_top1"] for r in validated], marker="o", label="top-1")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
