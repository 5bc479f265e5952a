"""From a config to the class list and items: out-of-range labels (issue 18)."""

import pytest

from mateffnet.config import DataConfig
from mateffnet.engine.build import load_split
from mateffnet.errors import MateffnetError


def _data(tmp_path, train_text, classes=None):
    (tmp_path / "train.txt").write_text(train_text)
    if classes is not None:
        (tmp_path / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return DataConfig(root=str(tmp_path), format="list", annotations="train.txt",
                      classes="classes.txt" if classes is not None else None)


def test_a_label_out_of_range_in_a_list_does_not_silently_create_classes(tmp_path):
    with pytest.raises(MateffnetError, match=r"train.txt: labels go up to 99, but no training video has label 2, 3, 4, "
                       r"5, 6, … \(92 more\); a label out of range\?"):
        load_split(_data(tmp_path, "a.mp4 0\nb.mp4 1\nc.mp4 99\n"))


def test_labels_without_gaps_give_one_class_each(tmp_path):
    classes, train, evaluation = load_split(_data(tmp_path, "a.mp4 0\nb.mp4 1\nc.mp4 2\n"))
    assert classes == ["0", "1", "2"] and len(train) == 3 and evaluation is None


def test_a_class_list_declares_classes_that_have_no_video(tmp_path):
    classes, _, _ = load_split(_data(tmp_path, "a.mp4 0\nb.mp4 3\n", classes=["w", "x", "y", "z"]))
    assert classes == ["w", "x", "y", "z"]
    with pytest.raises(MateffnetError, match=r"classes.txt: 4 class names, but the lists use labels up to 7"):
        load_split(_data(tmp_path, "a.mp4 0\nb.mp4 7\n", classes=["w", "x", "y", "z"]))
