"""`mateffnet train`: one stream from a YAML config (or its plan with --dry-run, or the config's keys)."""

from __future__ import annotations

from pathlib import Path

from mateffnet.config import describe_schema, load_config
from mateffnet.engine.plan import describe_plan
from mateffnet.engine.train import train
from mateffnet.fileio import output_folder
from mateffnet.runtime import torchrun_env


def run(config: str | None, overrides: list[str], *, out: str | None, resume: bool, dry_run: bool,
        help_config: bool, progress: bool) -> int:
    if help_config:
        print(describe_schema())
        return 0
    experiment = load_config(config, overrides)
    out_dir = Path(out or Path("runs") / experiment.name)
    if dry_run:
        print(describe_plan(experiment, out_dir))
        return 0
    output_folder(out_dir)
    result = train(experiment, out_dir, resume=resume, progress=progress)
    if torchrun_env().rank == 0:
        best = (f"best validation top-1 {100 * result.best_top1:.2f}% (epoch {result.best_epoch})"
                if result.best_top1 is not None else "no validation set")
        print(f"done: {len(result.history)} epochs, {best}; model folders {out_dir / 'best'} and {out_dir / 'last'}")
    return 0
