import json

import numpy as np
import pytest

from mateffnet.cli import main
from mateffnet.engine import fusion
from mateffnet.engine.scoring import save_scores
from mateffnet.engine.fusion import fusion_table, tune_flow_weight
from mateffnet.errors import MateffnetError

CLASSES = ["a", "b"]


def scores_favouring(low: float, high: float, prefix: str):
    """Two-class scores (all label 0) that 1:w fusion gets all right exactly when low < w < high.

    One video whose RGB score is slightly wrong and flow score right (right when w > low), one whose RGB score
    is right and flow slightly wrong (right when w < high), and a video each stream gets right."""
    rgb = np.array([[0.4, 0.6], [0.6, 0.4], [0.9, 0.1]], dtype=np.float32)
    flow = np.array([[0.5 + 0.1 / low, 0.5 - 0.1 / low], [0.5 - 0.1 / high, 0.5 + 0.1 / high], [0.9, 0.1]],
                    dtype=np.float32)
    ids = [f"{prefix}{i}" for i in range(3)]
    return ids, {"rgb": rgb, "flow": flow}, np.zeros(3, dtype=np.int64)


def test_the_weight_is_chosen_on_validation_scores_whatever_the_test_scores_would_choose():
    _, val_scores, val_labels = scores_favouring(2.02, 2.98, "val")
    _, test_scores, test_labels = scores_favouring(0.52, 0.78, "test")
    choice = tune_flow_weight(val_scores, val_labels)
    assert choice.weights == (1.0, 2.05)  # the best range (2, 3), its end closest to the paper's 1:1
    assert choice.validation_top1 == 1.0 and choice.validation_videos == 3
    on_test = tune_flow_weight(test_scores, test_labels)
    assert on_test.weights != choice.weights  # the test set would have picked another weight
    table = fusion_table(choice, test_scores, test_labels, CLASSES)
    assert list(table) == ["tuned 1:2.05", "paper 1:1", "TSN 1:1.5"]
    assert table["tuned 1:2.05"]["weights"] == {"rgb": 1.0, "flow": 2.05}
    assert table["tuned 1:2.05"]["top1"] == pytest.approx(2 / 3)  # the honest test result of that choice
    assert table["paper 1:1"]["top1"] == pytest.approx(2 / 3)


def test_ties_keep_the_papers_weight():
    _, scores, labels = scores_favouring(0.52, 2.98, "v")
    assert tune_flow_weight(scores, labels).weights == (1.0, 1.0)


def write_scores(path, ids, scores, labels):
    save_scores(path, ids, labels, CLASSES, scores, (1.0, 1.0))
    return path


def test_evaluate_tunes_on_the_validation_file_and_never_passes_the_test_scores_to_the_tuning(tmp_path, monkeypatch,
                                                                                               capsys):
    val = write_scores(tmp_path / "val.npz", *scores_favouring(2.02, 2.98, "val"))
    test = write_scores(tmp_path / "test.npz", *scores_favouring(0.52, 0.78, "test"))
    _, test_scores, _ = scores_favouring(0.52, 0.78, "test")
    seen = []
    real_tune = fusion.tune_flow_weight

    def guarded_tune(scores, labels, *args, **kwargs):  # raises if handed the test set's scores
        same = all(np.array_equal(scores[name], test_scores[name]) for name in test_scores)
        assert not same, "the test scores reached the tuning"
        seen.append(len(labels))
        return real_tune(scores, labels, *args, **kwargs)

    monkeypatch.setattr(fusion, "tune_flow_weight", guarded_tune)
    assert main(["evaluate", "--scores", str(test), "--tune-fusion", str(val), "--out", str(tmp_path / "out")]) == 0
    assert seen == [3]
    printed = capsys.readouterr().out
    assert "rgb 1 : flow 2.05" in printed and "paper 1:1" in printed and "TSN 1:1.5" in printed
    saved = json.loads((tmp_path / "out" / "fusion_tuning.json").read_text())
    assert saved["chosen_weights"] == {"rgb": 1.0, "flow": 2.05}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fusion_weights"] == {"rgb": 1.0, "flow": 2.05}  # the test scores fused at the tuned weight


def test_validation_scores_that_share_videos_with_the_test_scores_are_refused(tmp_path, capsys):
    ids, scores, labels = scores_favouring(2.02, 2.98, "same")
    val = write_scores(tmp_path / "val.npz", ids, scores, labels)
    test = write_scores(tmp_path / "test.npz", ids, scores, labels)
    assert main(["evaluate", "--scores", str(test), "--tune-fusion", str(val), "--out", str(tmp_path / "out")]) != 0
    assert "share 3 video(s) with the test scores (e.g. same0)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()  # refused before writing anything


def test_tuning_needs_both_streams():
    _, scores, labels = scores_favouring(2.02, 2.98, "v")
    with pytest.raises(MateffnetError, match="missing flow"):
        tune_flow_weight({"rgb": scores["rgb"]}, labels)


def test_fixed_fusion_weights_still_re_fuse_saved_scores(tmp_path):
    test = write_scores(tmp_path / "test.npz", *scores_favouring(0.52, 0.78, "test"))
    assert main(["evaluate", "--scores", str(test), "--fusion-weights", "1", "0.6", "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["fusion_weights"] == {"rgb": 1.0, "flow": 0.6} and metrics["streams"]["fused"]["top1"] == 1.0
    assert not (tmp_path / "o" / "fusion_tuning.json").exists()
