from mateffnet.engine.reproduce import format_table
from mateffnet.experiments import runs


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
