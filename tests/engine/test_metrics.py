import numpy as np
import pytest

from mateffnet.engine.metrics import classification_metrics


def test_top1_top5_and_mean_class_accuracy_on_a_worked_example():
    # 3 classes; class 0 has 3 videos (2 right), class 1 has 1 video (wrong), class 2 has none
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    labels = np.array([0, 0, 0, 1])
    m = classification_metrics(scores, labels, num_classes=3)
    assert m.top1 == pytest.approx(2 / 4)
    assert m.top5 == 1.0  # with 3 classes every label is in the top 5
    assert m.per_class == [pytest.approx(2 / 3), 0.0, None]
    assert m.mean_class == pytest.approx((2 / 3 + 0.0) / 2)  # the class without videos is left out
    assert m.confusion.tolist() == [[2, 1, 0], [1, 0, 0], [0, 0, 0]]


def test_top5_counts_a_label_ranked_fifth_but_not_sixth():
    scores = np.tile(np.arange(10, dtype=float)[::-1], (2, 1))  # class 0 best … class 9 worst
    m = classification_metrics(scores, np.array([4, 5]))
    assert m.top5 == 0.5
    assert m.top1 == 0.0


def test_mean_class_differs_from_top1_when_classes_are_unbalanced():
    scores = np.eye(2)[[0, 0, 0, 0, 0]]
    labels = np.array([0, 0, 0, 0, 1])
    m = classification_metrics(scores, labels)
    assert m.top1 == pytest.approx(0.8)
    assert m.mean_class == pytest.approx(0.5)
