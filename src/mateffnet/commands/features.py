"""`mateffnet features`: two-stream snippet features for temporal action localisation.

Layout (what ActionFormer, BMN and G-TAD style loaders read: one float32 `.npy` of shape (T, C) per video
at a fixed frame stride, `feat_stride` and `num_frames` in their configs):

    OUT/rgb/<video id>.npy          (snippets, D) float32, one row per snippet
    OUT/flow/<video id>.npy         (snippets, D) float32
    OUT/rgb_flow/<video id>.npy     with --concat: [rgb | flow] along D (like the two-stream I3D features
                                    ActionFormer ships for THUMOS14)
    OUT/<video id>.json             per video: fps, frames, stride, span, snippets, dims, and `times`, the
                                    centre (s) of each row; written last, so it marks the video finished
    OUT/features.json               the settings; OUT/report.json (OUT/report_<rank>.json when sharded):
                                    the failures, one line each

`<video id>` is the video's path under DATA without its suffix (DATA/a/b.mp4 → a/b), or a packed video's
name in a store. Snippet i covers frames i·stride … i·stride + span − 1 (0-based), span = L + 1 for flow
stacks of L fields (1 for an RGB-only model): its flow is the stack of the L fields between them (as a flow
segment of `predict`), its RGB frame the middle one, frame i·stride + L/2 (rounded down). Row i is at
(i·stride + span/2) / fps seconds — ActionFormer's `(feat_stride * i + 0.5 * num_frames) / fps` with
feat_stride = stride, num_frames = span (frame k spans k/fps … (k+1)/fps). Snippets that would run past
the last frame are not made (a video shorter than one snippet gives one, its last flow repeated).

Which features (`--features`):
- `pooled`: the backbone's globally averaged feature map of the snippet, before the stream's Fc
  (EfficientNet-B0: 1280-d), centre crop, from the model's own input normalisation; no further
  normalisation (L2 or otherwise) is applied.
- `attended`: the stream's 512-d tokens after its Fc and 2-head self-attention, the attention run over the
  context of `num_segments` (the model's training T) consecutive snippets around each snippet (clipped at
  the video's ends), the row being that snippet's own output token.

On a CUDA device the streams run under bf16 autocast (as `predict` does), so features made on a GPU
differ from float32 CPU ones by bf16 rounding; the files are float32 either way.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mateffnet.engine.windows import WindowScorer, attended_tokens, decoded_frames, frames_ahead, score_frames
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json
from mateffnet.models import TwoStreamNet

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv")
FEATURE_KINDS = ("pooled", "attended")
STORE_SUFFIX = ".mfv"


@dataclass
class FeatureOptions:
    stride: int = 4  # frames between snippet starts
    streams: tuple[str, ...] = ("rgb", "flow")
    features: str = "pooled"
    concat: bool = False
    batch: int = 32  # snippets per forward pass
    shard: tuple[int, int] | None = None


@dataclass
class FeatureReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)
    snippets: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.snippets / self.seconds if self.seconds > 0 else 0.0
        return (f"{len(self.done)} videos done, {len(self.skipped)} already done, {len(self.failed)} failed; "
                f"{self.snippets} snippets in {self.seconds:.1f} s ({rate:.1f} snippets/s)")


def find_videos(data: Path) -> list[tuple[str, Path]]:
    """(video id, path) of every packed video (`*.mfv`, a store) or else every video file under `data`, sorted."""
    if not data.is_dir():
        raise MateffnetError(f"{data}: not a folder (expected a folder of videos or a packed store)")
    packed = sorted(data.rglob(f"*{STORE_SUFFIX}"))
    files = packed or sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return [(path.relative_to(data).with_suffix("").as_posix(), path) for path in files]


def shard_of(shard: tuple[int, int] | None) -> tuple[int, int]:
    """The (index, count) of this process: --shard, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if shard is not None:
        return shard
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    return (int(rank), int(world)) if rank is not None and world is not None else (0, 1)


def snippet_span(model: TwoStreamNet) -> int:
    """Frames per snippet: L + 1 when the model has a flow stream (stacks of L fields), else 1."""
    return model.flow.config.flow_length + 1 if model.flow is not None else 1


def _store_frames(path: Path, size_key, chunk: int = 64):
    from mateffnet.io.store import PackedVideo

    video = PackedVideo(path)

    def frames():
        for start in range(0, video.num_frames, chunk):
            block = video.read_rgb(range(start, min(start + chunk, video.num_frames))).permute(0, 2, 3, 1).numpy()
            for image in block:
                yield {size: image for size in size_key}

    def flows(indices: np.ndarray) -> torch.Tensor:
        return video.read_flow(np.minimum(indices, video.num_flows - 1).tolist())

    return video, frames(), flows


def video_features(path: Path, model: TwoStreamNet, options: FeatureOptions, device: torch.device) -> tuple[dict, dict]:
    """Features of one video → ({stream: (snippets, D) float32}, the per-video description)."""
    span = snippet_span(model)
    streams = {name: model.streams[name] for name in options.streams}
    pair = TwoStreamNet(streams.get("rgb"), streams.get("flow"), model.weights)
    if path.suffix == STORE_SUFFIX:
        sizes = list(dict.fromkeys(s.config.frame_size for s in streams.values()))
        video, frames, flows = _store_frames(path, sizes)
        if "flow" in streams and not video.num_flows:
            raise MateffnetError(f"{path}: the packed video has no flow (prepared with --flow-method none)")
        scorer = WindowScorer(pair, 1, 1, device, features=True, flow_source=flows)
        fps, blocks = video.fps, _collect(score_frames(frames, scorer, span, options.stride, options.batch))
    else:
        scorer = WindowScorer(pair, 1, 1, device, features=True)
        with decoded_frames(path, scorer.sizes) as (info, decoded), \
                frames_ahead(decoded, options.batch * options.stride) as frames:
            fps, blocks = info.fps, _collect(score_frames(frames, scorer, span, options.stride, options.batch))
    starts, pooled = blocks
    arrays = {}
    for name, stream in streams.items():
        features = np.concatenate(pooled[name])[:, 0]  # (snippets, F): one segment per snippet
        if options.features == "attended":
            features = attended_context(stream, features, device)
        arrays[name] = features.astype(np.float32)
    frames_seen = starts[-1] + span if starts else 0
    info = {"fps": fps, "stride": options.stride, "span": span, "snippets": len(starts), "frames_covered": frames_seen,
            "features": options.features, "dims": {name: int(a.shape[1]) for name, a in arrays.items()},
            "times": [round((s + span / 2) / fps, 4) if fps else None for s in starts]}
    return arrays, info


def _collect(batches) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    starts, pooled = [], {}
    for windows, scores, _ in batches:
        starts += [w.start for w in windows]
        for name, features in scores.features.items():
            pooled.setdefault(name, []).append(features)
    return starts, pooled


@torch.no_grad()
def attended_context(stream, pooled: np.ndarray, device: torch.device) -> np.ndarray:
    """(N, F) pooled snippet features → (N, 512) attended tokens, each over its `num_segments` neighbours."""
    if stream.config.attention_tokens != "segments":
        raise MateffnetError("attended snippet features need a model with attention_tokens 'segments'")
    count, context = len(pooled), min(stream.config.num_segments, len(pooled))
    first = np.clip(np.arange(count) - context // 2, 0, count - context)  # each snippet's context start
    windows = torch.from_numpy(pooled).to(device)[torch.from_numpy(first[:, None] + np.arange(context)).to(device)]
    out = []
    for start in range(0, count, 256):
        out.append(attended_tokens(stream, windows[start:start + 256]).float())
    tokens = torch.cat(out)  # (N, context, 512)
    own = torch.from_numpy(np.arange(count) - first).to(device)
    return tokens[torch.arange(count, device=device), own].cpu().numpy()


def finished(out: Path, video_id: str) -> bool:
    return (out / f"{video_id}.json").is_file()


def write_video_features(out: Path, video_id: str, arrays: dict[str, np.ndarray], info: dict, concat: bool) -> None:
    """Every array to its temporary name and renamed; the per-video JSON last (it marks the video finished)."""
    if concat and len(arrays) > 1:
        arrays = {**arrays, "rgb_flow": np.concatenate([arrays["rgb"], arrays["flow"]], axis=1)}
    for name, array in arrays.items():
        with atomic_path(out / name / f"{video_id}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    atomic_write_json(out / f"{video_id}.json", {"video": video_id, **info})


def extract_features(data: str | Path, model_dir: str | Path, out: str | Path, options: FeatureOptions,
                     device: str = "auto", progress: bool = True) -> FeatureReport:
    """Features of every video under `data` (this process's shard) into `out`; finished videos are skipped."""
    from tqdm import tqdm

    from mateffnet.runtime import resolve_device

    for name in options.streams:
        if name not in ("rgb", "flow"):
            raise MateffnetError(f"--streams: unknown stream {name!r}; expected rgb and/or flow")
    if options.features not in FEATURE_KINDS:
        raise MateffnetError(f"--features must be one of {', '.join(FEATURE_KINDS)}, got {options.features!r}")
    if options.stride < 1:
        raise MateffnetError(f"--stride must be at least 1 frame, got {options.stride}")
    index, count = shard_of(options.shard)
    resolved = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process
    model = TwoStreamNet.from_pretrained(model_dir, map_location=resolved)
    missing = [name for name in options.streams if name not in model.streams]
    if missing:
        raise MateffnetError(f"{model_dir}: the model has no {' or '.join(missing)} stream")
    out = Path(out)
    videos = find_videos(Path(data))[index::count]
    atomic_write_json(out / "features.json", {"model": str(model_dir), "stride": options.stride,
                                              "span": snippet_span(model), "features": options.features,
                                              "streams": list(options.streams), "concat": options.concat,
                                              "layout": "OUT/<stream>/<video id>.npy, (snippets, D) float32"})
    report = FeatureReport()
    started = time.perf_counter()
    bar = tqdm(videos, unit="video", desc="features", disable=not progress)
    for video_id, path in bar:
        if finished(out, video_id):
            report.skipped.append(video_id)
            continue
        try:
            arrays, info = video_features(path, model, options, resolved)
        except MateffnetError as error:
            report.failed[video_id] = str(error)
            print(f"mateffnet features: {error}", file=sys.stderr)
            continue
        write_video_features(out, video_id, arrays, info, options.concat)
        report.done.append(video_id)
        report.snippets += info["snippets"]
        bar.set_postfix_str(f"{report.snippets / (time.perf_counter() - started):.1f} snippets/s")
    report.seconds = time.perf_counter() - started
    name = "report.json" if count == 1 else f"report_{index}.json"
    atomic_write_json(out / name, {"shard": [index, count], "done": report.done, "skipped": report.skipped,
                                   "failed": report.failed, "snippets": report.snippets,
                                   "seconds": round(report.seconds, 3)})
    return report
