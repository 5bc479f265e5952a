"""`mateffnet timeline`: what happens when in a video of any length, per stream and fused.

A window of `window` seconds slides over the video every `stride` seconds; each window is scored as
`predict` scores a whole video (T test segments, both streams, late fusion; `engine.windows`). The video
decodes as a stream, in a background thread while the device computes: only the frames one batch of windows
spans (and the next batch's new frames, decoded ahead) are held. Per video, in OUT/<video name>/:

    windows.jsonl   one JSON object per window: window, start, end, centre (seconds; a window covers the
                    frames start·fps ≤ k < end·fps, frame k shown at k/fps), start_frame, end_frame, and the
                    top-k {label, prob} of "fused", "rgb", "flow"
    segments.json   with --merge: consecutive windows of the same fused top-1 (prob ≥ the threshold)
                    merged into labelled segments {label, start, end, prob (mean), windows}; with
                    --min-segment, shorter segments dropped and their neighbours joined
    timeline.png    classes over time: a row per stream and the fused row (and the segments)
    timeline.html   a self-contained page: the summary, the picture, the segments and thumbnails
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mateffnet.engine.windows import WindowScorer, decoded_frames, frames_ahead, score_frames
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json
from mateffnet.models import TwoStreamNet
from mateffnet.viz.timeline import jpeg_data_uri, plot_timeline, write_timeline_page


@dataclass
class TimelineOptions:
    window: float = 4.0  # seconds per window
    stride: float = 1.0  # seconds between window starts
    segments: int = 8  # test segments per window
    crops: int = 1
    topk: int = 5
    batch: int = 8  # windows per forward pass
    merge: float | None = None  # merge consecutive windows into segments when fused top-1 prob ≥ this
    min_segment: float = 0.0  # seconds: shorter merged segments are dropped (their neighbours joined)
    thumbnails: int = 24
    flow_method: str | None = None  # None: the flow stream's own
    flow_params: dict | None = None


@dataclass
class TimelineResult:
    video: str
    out_dir: Path
    duration: float  # seconds of video covered by decoding
    windows: int
    seconds: float  # wall time
    flows_computed: int
    segments: list[dict] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        return self.duration / self.seconds if self.seconds > 0 else 0.0


def window_frames(window: float, stride: float, fps: float, video: str) -> tuple[int, int]:
    """Window length and stride in frames at `fps` (at least 1 frame each)."""
    if fps <= 0:
        raise MateffnetError(f"{video}: the container gives no frame rate; cannot place windows in seconds")
    if window <= 0 or stride <= 0:
        raise MateffnetError(f"--window and --stride must be positive seconds, got {window} and {stride}")
    return max(2, round(window * fps)), max(1, round(stride * fps))


def merge_windows(centres: np.ndarray, fused: np.ndarray, class_names: list[str], threshold: float,
                  stride: float, duration: float, min_duration: float = 0.0) -> list[dict]:
    """Consecutive windows with the same fused top-1 class at probability ≥ `threshold` → labelled segments.

    A window stands for its centre ± stride/2 (clipped to the video), so a segment runs from half a stride
    before its first window's centre to half a stride after its last's; windows under the threshold
    break segments and belong to none. With `min_duration`, segments shorter than it are dropped, the
    neighbours they separated joined when of one class, and the boundary between two segments that no
    longer touch put in the middle of the gap."""
    top, prob = fused.argmax(1), fused.max(1)
    runs: list[dict] = []
    for i, (cls, p) in enumerate(zip(top, prob)):
        if p < threshold:
            continue
        start, end = max(0.0, centres[i] - stride / 2), min(duration, centres[i] + stride / 2)
        last = runs[-1] if runs else None
        if last and last["label"] == class_names[cls] and last["last"] == i - 1:
            last["end"], last["last"] = end, i
            last["probs"].append(float(p))
        else:
            runs.append({"label": class_names[cls], "start": start, "end": end, "last": i, "probs": [float(p)]})
    if min_duration > 0:
        kept: list[dict] = []
        for run in (r for r in runs if r["end"] - r["start"] >= min_duration - 1e-9):
            if kept and kept[-1]["label"] == run["label"]:
                kept[-1]["end"] = run["end"]
                kept[-1]["probs"] += run["probs"]
                continue
            if kept and kept[-1]["end"] < run["start"]:
                kept[-1]["end"] = run["start"] = (kept[-1]["end"] + run["start"]) / 2
            kept.append(run)
        runs = kept
    return [{"label": r["label"], "start": round(r["start"], 4), "end": round(r["end"], 4),
             "prob": round(float(np.mean(r["probs"])), 4), "windows": len(r["probs"])} for r in runs]


def top_entries(p: np.ndarray, class_names: list[str], k: int) -> list[dict]:
    order = np.argsort(-p)[:k]
    return [{"label": class_names[i], "prob": round(float(p[i]), 6)} for i in order]


def timeline_video(video: str | Path, model: TwoStreamNet, out_dir: str | Path, options: TimelineOptions,
                   device: torch.device, progress: bool = True) -> TimelineResult:
    """Slide windows over one video, write its outputs (module docstring) into `out_dir`, return a summary."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    names = model.class_names or [str(i) for i in range(next(iter(model.streams.values())).config.num_classes)]
    scorer = WindowScorer(model, options.segments, options.crops, device, options.flow_method, options.flow_params)
    started = time.perf_counter()
    spans, centres, probabilities, thumbs = [], [], {}, []
    with decoded_frames(video, scorer.sizes) as (info, decoded), atomic_path(out_dir / "windows.jsonl") as tmp, \
            open(tmp, "w") as lines:
        length, stride = window_frames(options.window, options.stride, info.fps, str(video))
        fps = info.fps
        expected = info.duration or (info.declared_frames / fps if info.declared_frames else None)
        expected_windows = max(1, int(((expected or 0) * fps - length) // stride) + 1)
        every = max(1, round(expected_windows / max(1, options.thumbnails)))
        thumb_size = scorer.sizes[0]
        bar = tqdm(total=round(expected, 1) if expected else None, unit="s", desc=Path(video).name, disable=not progress,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s video [{elapsed}<{remaining}{postfix}]")
        done = 0.0
        windows_seen = 0

        def middle_frames(windows, ring) -> dict:  # thumbnails: the middle frame of every `every`-th window
            picked = [w for w in windows if (w.start // stride) % every == 0]
            return {w.start: ring.take(np.array([w.start + w.length // 2]), thumb_size)[0] for w in picked}

        with frames_ahead(decoded, options.batch * stride) as frames:
            for windows, scores, middles in score_frames(frames, scorer, length, stride, options.batch, keep=middle_frames):
                for row, window in enumerate(windows):
                    start, end = window.start / fps, window.end / fps
                    centre = (start + end) / 2
                    record = {"window": windows_seen, "start": round(start, 4), "end": round(end, 4),
                              "centre": round(centre, 4), "start_frame": window.start, "end_frame": window.end}
                    for stream in ("fused", "rgb", "flow"):
                        if stream in scores.probabilities:
                            p = scores.probabilities[stream][row]
                            record[stream] = top_entries(p, names, options.topk)
                            probabilities.setdefault(stream, []).append(p)
                    lines.write(json.dumps(record) + "\n")
                    spans.append((centre - options.stride / 2, centre + options.stride / 2))
                    centres.append(centre)
                    if window.start in middles:
                        thumbs.append((centre, record["fused"][0]["label"], jpeg_data_uri(middles[window.start])))
                    windows_seen += 1
                now = windows[-1].end / fps
                bar.update(now - done)
                done = now
                bar.set_postfix_str(f"{done / (time.perf_counter() - started):.1f}x real time")
        bar.close()
    seconds = time.perf_counter() - started
    if not centres:
        raise MateffnetError(f"{video}: no frames decode")
    probabilities = {k: np.stack(v) for k, v in probabilities.items()}
    duration = max(done, centres[-1])
    spans = np.clip(np.array(spans), 0.0, duration)
    segments = None
    if options.merge is not None:
        segments = merge_windows(np.array(centres), probabilities["fused"], names, options.merge, options.stride, duration,
                                 options.min_segment)
        atomic_write_json(out_dir / "segments.json", {"video": str(video), "threshold": options.merge, "segments": segments})
    title = f"{Path(video).name}: {options.window:g} s windows every {options.stride:g} s, {options.segments} segments"
    plot_timeline(spans, probabilities, names, out_dir / "timeline.png", title, segments)
    result = TimelineResult(str(video), out_dir, duration, len(centres), seconds, scorer.flows_computed, segments or [])
    summary = [("video", str(video)), ("duration", f"{duration:.1f} s at {fps:g} fps"),
               ("windows", f"{len(centres)} of {options.window:g} s every {options.stride:g} s, {options.segments} segments"),
               ("streams", ", ".join(model.streams)), ("device", str(device)),
               ("speed", f"{result.realtime_factor:.1f}x real time ({seconds:.1f} s)")]
    write_timeline_page(out_dir / "timeline.html", f"mateffnet timeline: {Path(video).name}", out_dir / "timeline.png",
                        thumbs, summary, segments)
    return result


def run_timeline(videos: list[str], model_dir: str | Path, out: str | Path, options: TimelineOptions,
                 device: str = "auto", progress: bool = True) -> tuple[list[TimelineResult], int]:
    """Timelines of `videos` into `out`/<video name>/ each; one line per video when done (a video that fails
    gets one error line on stderr and the others go on), then a summary. Returns (results, failures)."""
    import sys

    from mateffnet.runtime import resolve_device

    resolved = resolve_device(device)
    model = TwoStreamNet.from_pretrained(model_dir, map_location=resolved)
    stems = [Path(v).stem for v in videos]
    results, failures = [], 0
    for index, (video, stem) in enumerate(zip(videos, stems)):
        folder = Path(out) / (stem if stems.count(stem) == 1 else f"{stem}_{index}")
        try:
            result = timeline_video(video, model, folder, options, resolved, progress)
        except MateffnetError as error:
            failures += 1
            print(f"mateffnet timeline: error: {error}", file=sys.stderr)
            continue
        results.append(result)
        labels = " → ".join(f"{s['label']} {s['start']:.1f}-{s['end']:.1f}s" for s in result.segments[:8])
        print(f"{video}: {result.windows} windows, {result.duration:.1f} s of video in {result.seconds:.1f} s "
              f"({result.realtime_factor:.1f}x real time); {folder}/timeline.html" + (f"\n  {labels}" if labels else ""))
    total_video = sum(r.duration for r in results)
    total_time = sum(r.seconds for r in results)
    print(f"done: {len(results)} video(s){f' ({failures} failed)' if failures else ''}, {total_video:.1f} s of video in {total_time:.1f} s "
          f"({total_video / total_time if total_time else 0:.1f}x real time), {sum(r.windows for r in results)} windows, "
          f"{sum(r.flows_computed for r in results)} flow fields computed")
    return results, failures
