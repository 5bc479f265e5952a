from mateffnet.commands.reproduce import format_table, run_status
from mateffnet.engine.checkpoint import save_checkpoint
from mateffnet.engine.experiments import runs
from mateffnet.models import StreamNet


def test_a_runs_state_is_read_from_its_checkpoints(tmp_path):
    assert run_status(tmp_path / "run", 3) == "to train"
    model = StreamNet(2, backbone="resnet18", input_size=32, num_segments=2)
    save_checkpoint(tmp_path / "run", 2, model, {"epoch": 2})
    assert run_status(tmp_path / "run", 3) == "resume after epoch 2"
    save_checkpoint(tmp_path / "run", 3, model, {"epoch": 3})
    assert run_status(tmp_path / "run", 3) == "resume after epoch 3"  # finished, but no best/ model yet
    model.save_pretrained(tmp_path / "run" / "best")
    assert run_status(tmp_path / "run", 3) == "trained"


def test_the_table_shows_our_numbers_beside_the_papers():
    plan = runs("table2", splits=(1,), backbones=("efficientnet_b0",))
    streams = {"rgb": {"top1": 0.5, "top5": 0.9}, "flow": {"top1": 0.625, "top5": 0.9}, "fused": {"top1": 0.75, "top5": 1.0}}
    text = format_table("table2", plan, {run.pair: {"streams": streams} for run in plan})
    assert text.startswith("## Table2: UCF101 (mean of split 1)")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2  # with and without attention
    assert any(row.endswith("| yes | 50.0 | 62.5 | 75.0 | 94.8 |") for row in rows), rows


def test_the_order_ablation_table_has_one_row_per_variant_with_our_numbers():
    plan = runs("sthv2")
    results = {}
    for number, run in enumerate(plan):
        accuracy = 0.1 * (number // 2 + 1)
        results[run.pair] = {"streams": {s: {"top1": accuracy, "top5": accuracy + 0.05} for s in ("rgb", "flow", "fused")}}
    text = format_table("sthv2", plan, results)
    assert "## Sthv2: Something-Something v2" in text
    rows = [line for line in text.splitlines() if line.startswith("| EfficientNet") or line.startswith("| MAT")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| EfficientNet-B0", "| MAT-EffNet", "| MAT-EffNet + learned temporal encoding",
        "| MAT-EffNet + sinusoidal temporal encoding"]
    assert rows[3].split(" | ")[2:6] == ["40.0", "40.0", "40.0", "45.0"]
