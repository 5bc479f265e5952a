"""`mateffnet prepare`: decode every listed video, compute its flow, write one packed file per video."""

from __future__ import annotations

import sys

from mateffnet.config import TVL1_SCHEDULES
from mateffnet.io.decode import parse_size
from mateffnet.prepare.job import prepare_dataset
from mateffnet.prepare.options import PrepareOptions, parse_shard


def run(src: str, out: str, *, format: str, annotations: str | None, split: int, flow_method: str,
        flow_bound: float, tvl1: str, size: str, max_frames: int | None, workers: int | None, device: str,
        flow_batch: int, rgb_quality: int, flow_quality: int, flow_codec: str, shard: str | None, verify: bool,
        progress: bool) -> int:
    """Prepare the videos, print the report's summary; the exit status says whether any failed."""
    options = PrepareOptions(
        size=parse_size(size),
        flow_method=flow_method,
        flow_bound=flow_bound,
        flow_params=dict(TVL1_SCHEDULES[tvl1]) if flow_method == "tvl1" else {},
        device=device,
        workers=workers,
        max_frames=max_frames,
        rgb_quality=rgb_quality,
        flow_quality=flow_quality,
        flow_codec=flow_codec,
        flow_batch=flow_batch,
        shard=parse_shard(shard) if shard else None,
        verify=verify,
    )
    report = prepare_dataset(src, out, format, annotations, split, options, progress=progress)
    print(report.summary())
    if report.unwritten:
        print(f"mateffnet prepare: error: the report could not be written: {report.unwritten}", file=sys.stderr)
    else:
        print(f"report: {report.report_path}")
    if report.stopped:
        print(f"mateffnet prepare: error: {report.stopped}", file=sys.stderr)
    return report.exit_status
