"""`mateffnet reproduce table2|table3|table4`: train every run of a paper table (skipping finished ones,
resuming interrupted ones), evaluate each RGB/flow pair with the test protocol, and write the table in
the paper's layout with the paper's numbers beside ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mateffnet.config import ExperimentConfig, config_from_dict
from mateffnet.engine.checkpoint import latest_checkpoint, load_train_state
from mateffnet.engine.experiments import BACKBONE_LABEL, PAPER_RESULTS, TABLES, Run, runs
from mateffnet.engine.scoring import evaluate_streams, load_scores, summarize
from mateffnet.engine.train import train
from mateffnet.fileio import atomic_write_text


def run_config(run: Run, data_root: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    return config_from_dict(run.config(), source=run.config_path, overrides=[f"data.root={data_root}", *overrides])


def run_status(out_dir: Path, epochs: int) -> str:
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return "to train"
    done = load_train_state(checkpoint)["epoch"]
    return "trained" if done >= epochs and (out_dir / "best").is_dir() else f"resume after epoch {done}"


def reproduce(table: str, data_root: str | Path, runs_dir: str | Path = "runs", splits=None, backbones=None,
              overrides: list[str] = (), dry_run: bool = False, progress: bool = True) -> Path | None:
    runs_dir = Path(runs_dir)
    plan = runs(table, tuple(splits) if splits else None, tuple(backbones) if backbones else None)
    configs = {run: run_config(run, data_root, list(overrides)) for run in plan}
    statuses = {run: run_status(runs_dir / run.name, configs[run].train.epochs) for run in plan}
    print(f"{table}: {len(plan)} runs under {runs_dir}/")
    for run in plan:
        print(f"  {run.name:<45} {statuses[run]}")
    if dry_run:
        return None
    for run in plan:
        if statuses[run] != "trained":
            print(f"\n== training {run.name} ({statuses[run]})")
            train(configs[run], runs_dir / run.name, resume=statuses[run] != "to train", progress=progress)
    results = {}
    for pair, (rgb, flow) in _pairs(plan).items():
        results[pair] = evaluate_pair(configs[rgb], runs_dir / rgb.name, runs_dir / flow.name, runs_dir / f"{pair}_eval",
                                      progress)
    path = runs_dir / f"{table}.md"
    atomic_write_text(path, format_table(table, plan, results))
    print(f"\n{path.read_text()}")
    return path


def _pairs(plan: list[Run]) -> dict[str, tuple[Run, Run]]:
    by_pair: dict[str, dict[str, Run]] = {}
    for run in plan:
        by_pair.setdefault(run.pair, {})[run.modality] = run
    return {pair: (streams["rgb"], streams["flow"]) for pair, streams in by_pair.items()}


def evaluate_pair(config: ExperimentConfig, rgb_dir: Path, flow_dir: Path, out_dir: Path, progress: bool) -> dict:
    """Test-protocol metrics of one RGB/flow pair, from cached scores when they exist."""
    scores_path = out_dir / "scores.npz"
    if scores_path.is_file():
        _, labels, class_names, scores = load_scores(scores_path)
        return summarize({k: v for k, v in scores.items() if k != "fused"}, labels, class_names, (1.0, 1.0))
    return evaluate_streams(config.data, {"rgb": rgb_dir / "best", "flow": flow_dir / "best"}, out_dir,
                            weights=(1.0, 1.0), progress=progress)


def format_table(table: str, plan: list[Run], results: dict[str, dict]) -> str:
    """Markdown in the layout of the paper's table, ours beside the paper's (mean over the splits run)."""
    dataset = TABLES[table]
    kinetics = all(run.split is None for run in plan)  # one split: top-1 and top-5 columns
    splits = sorted({run.split for run in plan if run.split})
    title = {"ucf101": "UCF101", "hmdb51": "HMDB51", "kinetics400": "Kinetics-400", "kinetics600": "Kinetics-600",
             "kinetics700": "Kinetics-700", "sthv2": "Something-Something v2", "diving48": "Diving48"}[dataset]
    lines = [f"## {table.capitalize()}: {title}" + (f" (mean of split{'s' if len(splits) > 1 else ''} "
                                                     f"{', '.join(map(str, splits))})" if splits else ""), ""]
    if kinetics:
        lines += ["| Model | Input | RGB top-1 | Flow top-1 | Two-stream top-1 | Two-stream top-5 | Paper top-1 | Paper top-5 |",
                  "|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["| Backbone | Input | Attention | RGB | Flow | Two-stream | Paper two-stream |", "|---|---|---|---|---|---|---|"]
    seen = []
    for run in plan:
        key = (run.backbone, run.attention, run.temporal_encoding)
        if key in seen:
            continue
        seen.append(key)
        pairs = [results[r.pair] for r in plan
                 if (r.backbone, r.attention, r.temporal_encoding) == key and r.modality == "rgb"]
        mean = {stream: {metric: 100 * float(np.mean([p["streams"][stream][metric] for p in pairs]))
                         for metric in ("top1", "top5")} for stream in ("rgb", "flow", "fused")}
        paper = {column: PAPER_RESULTS.get((dataset, run.backbone, run.attention, column))
                 for column in ("fused_top1", "fused_top5")}
        size = Run(dataset, run.split, run.backbone, run.attention, "rgb").config()["model"]["input_size"]
        if kinetics:
            label = f"{'MAT-EffNet' if run.attention else 'EfficientNet-B0'}"
            if run.temporal_encoding != "none":
                label += f" + {run.temporal_encoding} temporal encoding"
            lines.append(f"| {label} | {size} | {mean['rgb']['top1']:.1f} | {mean['flow']['top1']:.1f} | "
                         f"{mean['fused']['top1']:.1f} | {mean['fused']['top5']:.1f} | {_cell(paper['fused_top1'])} | "
                         f"{_cell(paper['fused_top5'])} |")
        else:
            lines.append(f"| {BACKBONE_LABEL[run.backbone]} | {size} | {'yes' if run.attention else 'no'} | "
                         f"{mean['rgb']['top1']:.1f} | {mean['flow']['top1']:.1f} | {mean['fused']['top1']:.1f} | "
                         f"{_cell(paper['fused_top1'])} |")
    lines += ["", "Top-1 video accuracy (%), two-stream = 1:1 average of the streams' softmax scores. "
              "Paper values not transcribed into `mateffnet.engine.experiments.PAPER_RESULTS` show as n/a."]
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run(table: str, data_root: str, *, runs_dir: str, splits: list[int] | None, backbones: list[str] | None,
        overrides: list[str], dry_run: bool, progress: bool) -> int:
    reproduce(table, data_root, runs_dir, splits, backbones, overrides, dry_run, progress=progress)
    return 0
