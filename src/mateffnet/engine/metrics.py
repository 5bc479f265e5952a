"""Video-level classification metrics.

- top-1 / top-5: the fraction of videos whose label is among the 1 / 5 highest scores ("accuracy" in
  most papers, including MAT-EffNet's).
- mean class accuracy: the mean over classes of each class's top-1 accuracy (what TSN prints as
  "accuracy"); classes with no test video are left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Metrics:
    top1: float
    top5: float
    mean_class: float
    per_class: list[float | None]  # top-1 per class; None where the class has no video
    confusion: np.ndarray  # (classes, classes): rows = true class, columns = predicted
    count: int

    def summary(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "mean_class": self.mean_class, "videos": self.count}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> Metrics:
    """scores (N, K) (any monotone score: logits or probabilities), labels (N,) ints in [0, K)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    num_classes = num_classes or scores.shape[1]
    if len(labels) == 0:
        return Metrics(float("nan"), float("nan"), float("nan"), [None] * num_classes,
                       np.zeros((num_classes, num_classes), dtype=np.int64), 0)
    predicted = scores.argmax(axis=1)
    k = min(5, scores.shape[1])
    # a label is in the top k when fewer than k classes score strictly higher than it
    label_scores = scores[np.arange(len(labels)), labels]
    rank = (scores > label_scores[:, None]).sum(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class: list[float | None] = []
    for c in range(num_classes):
        total = confusion[c].sum()
        per_class.append(float(confusion[c, c] / total) if total else None)
    present = [a for a in per_class if a is not None]
    return Metrics(
        top1=float((predicted == labels).mean()),
        top5=float((rank < k).mean()),
        mean_class=float(np.mean(present)),
        per_class=per_class,
        confusion=confusion,
        count=int(len(labels)),
    )
