import numpy as np
import pytest
from matplotlib.image import imread

from mateffnet.errors import MateffnetError
from mateffnet.viz.plots import plot_confusion_matrix, plot_training_curves, training_curves_figure


def assert_png_with_content(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05
    return image


def test_confusion_matrix_png_is_written(tmp_path):
    matrix = np.array([[8, 2, 0], [1, 9, 0], [0, 3, 7]])
    path = plot_confusion_matrix(matrix, ["walk", "run", "jump"], tmp_path / "cm.png", title="rgb")
    assert path == tmp_path / "cm.png"
    assert_png_with_content(path)


def test_confusion_matrix_with_many_classes_and_an_empty_row(tmp_path):
    matrix = np.random.default_rng(0).integers(0, 5, (101, 101))
    matrix[3] = 0  # a class with no test videos must not divide by zero
    assert_png_with_content(plot_confusion_matrix(matrix, [f"class{i}" for i in range(101)], tmp_path / "cm.png"))


def test_confusion_matrix_shape_must_match_the_class_names(tmp_path):
    with pytest.raises(MateffnetError, match=r"shape \(2, 2\), expected \(3, 3\) for 3 class names"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "cm.png")
    with pytest.raises(MateffnetError, match="non-negative"):
        plot_confusion_matrix(-np.eye(2), ["a", "b"], tmp_path / "cm.png")


def test_training_curves_plot_loss_and_accuracy_panels(tmp_path):
    rows = [{"epoch": e, "train_loss": 2.0 / e, "train_top1": 0.3 + 0.1 * e, "lr": 0.01} for e in range(1, 6)]
    for row in rows[1::2]:
        row["val_top1"] = row["train_top1"] - 0.05  # validation every other epoch
        row["val_loss"] = row["train_loss"] + 0.1
    image = assert_png_with_content(plot_training_curves(rows, tmp_path / "curves.png", title="flow"))
    assert image.shape[1] > image.shape[0]  # two panels side by side


def test_training_curves_need_epochs_and_metrics(tmp_path):
    with pytest.raises(MateffnetError, match="at least one epoch"):
        plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(MateffnetError, match="row 1 needs a numeric 'epoch' key"):
        plot_training_curves([{"epoch": 1, "train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "c.png")
    with pytest.raises(MateffnetError, match="no loss or accuracy keys .found lr."):
        plot_training_curves([{"epoch": 1, "lr": 0.1}], tmp_path / "c.png")


def test_training_curves_draw_the_training_loops_rows():
    # the keys mateffnet.engine.train writes per epoch; validation only on some epochs
    rows = [{"epoch": e, "train_loss": 2.0 / e, "lr": 0.01 / e, "clips_per_s": 40.0, "epoch_time_s": 3.0}
            for e in range(1, 5)]
    for row in rows[1::2]:
        row.update(val_loss=2.5 / row["epoch"], val_top1=0.2 * row["epoch"], val_top5=0.25 * row["epoch"],
                   val_mean_class=0.19 * row["epoch"])
    loss_ax, accuracy_ax = training_curves_figure(rows).axes
    assert [line.get_label() for line in loss_ax.lines] == ["train_loss", "val_loss"]
    assert [line.get_label() for line in accuracy_ax.lines] == ["val_top1", "val_top5", "val_mean_class"]
    epochs, percent = accuracy_ax.lines[0].get_data()
    assert list(epochs) == [2, 4] and list(percent) == pytest.approx([40.0, 80.0])
