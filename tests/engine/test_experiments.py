from pathlib import Path

import pytest
import torch

from mateffnet.config import load_config
from mateffnet.engine.build import build_model
from mateffnet.engine.experiments import all_runs, config_text, runs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSES = {"ucf101": 101, "hmdb51": 51, "kinetics400": 400, "kinetics600": 600, "kinetics700": 700, "sthv2": 174,
           "diving48": 48}


def test_the_paper_grid_has_every_experiment():
    assert len(runs("table2")) == 3 * 4 * 2 * 2  # splits × backbones × attention × streams
    assert len(runs("table3")) == 48
    assert len(runs("table4")) == 4
    assert len(runs("table2", splits=(1,), backbones=("resnet18",))) == 4
    assert all(run.temporal_encoding == "none" for table in ("table2", "table3", "table4") for run in runs(table))


@pytest.mark.parametrize("table", ["sthv2", "diving48", "kinetics600", "kinetics700"])
def test_the_order_ablation_tables_hold_the_papers_two_variants_and_two_order_aware_ones(table):
    plan = runs(table)
    assert len(plan) == 8
    variants = {(run.attention, run.temporal_encoding) for run in plan}
    assert variants == {(False, "none"), (True, "none"), (True, "learned"), (True, "sinusoidal")}
    assert len({run.pair for run in plan}) == 4 and len({run.name for run in plan}) == 8
    config = load_config(CONFIGS / next(r for r in plan if r.temporal_encoding == "learned").config_path)
    assert config.model.temporal_encoding == "learned" and config.data.format == table
    assert config.data.flip is (table != "sthv2")  # SSv2 names directions: no mirrored training clips


def test_shipped_configs_are_exactly_the_generated_ones():
    shipped = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert shipped == sorted(run.config_path for run in all_runs())
    for run in all_runs():
        assert (CONFIGS / run.config_path).read_text() == config_text(run), run.config_path


@pytest.mark.parametrize("run", all_runs(), ids=lambda run: run.name)
def test_every_shipped_config_parses(run):
    config = load_config(CONFIGS / run.config_path)
    assert (config.model.modality, config.model.backbone, config.model.attention) == (run.modality, run.backbone, run.attention)
    assert config.model.temporal_encoding == run.temporal_encoding
    assert config.data.format == run.dataset and (config.data.split == run.split or run.split is None)


def _distinct_models():
    seen = {}
    for run in all_runs():
        seen.setdefault((run.backbone, run.attention, run.modality, run.temporal_encoding), run)  # the dataset only changes the classifier
    return list(seen.values())


@pytest.mark.parametrize("run", _distinct_models(), ids=lambda run: run.name)
def test_every_architecture_in_the_configs_builds(run):
    config = load_config(CONFIGS / run.config_path)
    model = build_model(config, [f"c{i}" for i in range(CLASSES[run.dataset])], pretrained=False).eval()
    size = config.model.input_size
    clips = torch.zeros(1, 2, model.config.in_chans, size, size, dtype=torch.uint8)
    with torch.no_grad():
        assert model(clips).shape == (1, CLASSES[run.dataset])
