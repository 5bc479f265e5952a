"""Drawing a stream's self-attention over a video (the paper's Fig. 9).

Two pictures, both from the attention weights of one video (`StreamNet.attention_weights[b]`, shape
(heads, tokens, tokens), row q = how query token q spreads its attention over the key tokens, rows sum
to 1):

- segment attention (the paper's design, tokens = the T segments): the sampled frames in a row, under
  them per head the attention each segment *receives* (mean over the queries of its column, so the T
  values sum to 1 and 1/T is "no preference"), and per head the T×T matrix as a heat map;
- spatio-temporal attention (`attention_tokens="spatiotemporal"`, tokens = T×h×w positions before
  pooling): per head the attention each position receives, reshaped (T, h, w), upsampled and laid over
  its frame as a heat map.

The renderers take frames already sampled, uint8 (T, H, W, 3) (any size: the maps are upsampled to it),
so they work for RGB frames or colour-coded flow alike; `run_attention` runs a model on clips and returns
the weights to draw. Figures are drawn on matplotlib's Agg canvas and written atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mateffnet.errors import MateffnetError
from mateffnet.viz.plots import save_figure

HEAD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class AttentionResult:
    logits: "torch.Tensor"  # (B, classes)  # noqa: F821
    weights: "torch.Tensor"  # (B, heads, tokens, tokens), on the CPU, float32  # noqa: F821
    segments: int  # T
    grid: tuple[int, int] | None  # (h, w) positions per segment for spatio-temporal tokens; None for segment tokens


def run_attention(model, clips) -> AttentionResult:
    """Run `model` (a StreamNet with attention) on uint8 clips (B, T, C, H, W) and keep its attention weights.

    The model is put in eval mode and run on its own device (the clips are moved there).
    """
    import torch

    if model.attention is None:
        raise MateffnetError("this model has no attention layer (attention=False): there are no weights to draw")
    clips = torch.as_tensor(clips)
    if clips.ndim != 5:
        raise MateffnetError(f"clips must be (batch, segments, C, H, W), got shape {tuple(clips.shape)}")
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        logits = model(clips.to(device))
    weights = model.attention_weights.float().cpu()
    segments = clips.shape[1]
    grid = None
    if model.config.attention_tokens == "spatiotemporal":
        grid = feature_grid(weights.shape[-1] // segments, clips.shape[-2], clips.shape[-1])
    return AttentionResult(logits.float().cpu(), weights, segments, grid)


def feature_grid(positions: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) with h·w = `positions` whose aspect is closest to the input's (7×7 for B0 at 224×224)."""
    pairs = [(h, positions // h) for h in range(1, positions + 1) if positions % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1]) - math.log(height / width)))


def received_attention(weights) -> np.ndarray:
    """(heads, queries, keys) → (heads, keys): the attention each key token receives, mean over queries."""
    weights = _as_numpy(weights)
    if weights.ndim != 3:
        raise MateffnetError(f"attention weights must be (heads, tokens, tokens), got shape {weights.shape}")
    return weights.mean(axis=1)


def spatiotemporal_maps(weights, segments: int, grid: tuple[int, int]) -> np.ndarray:
    """(heads, T·h·w, T·h·w) → (heads, T, h, w): attention received by each position of each segment.

    Token order is the model's: segment-major, then row-major over the h×w positions.
    """
    received = received_attention(weights)
    h, w = grid
    if received.shape[1] != segments * h * w:
        raise MateffnetError(
            f"attention has {received.shape[1]} tokens, expected segments × h × w = {segments} × {h} × {w}"
        )
    return received.reshape(received.shape[0], segments, h, w)


def plot_segment_attention(frames, weights, path: str | Path, *, title: str | None = None,
                           frame_labels: list[str] | None = None) -> Path:
    """Frames in a row, per-head received attention as bars under them, per-head T×T heat maps. → `path`."""
    return save_figure(segment_attention_figure(frames, weights, title=title, frame_labels=frame_labels), path)


def segment_attention_figure(frames, weights, *, title: str | None = None,
                             frame_labels: list[str] | None = None) -> Figure:
    """The figure `plot_segment_attention` writes."""
    frames = _check_frames(frames)
    weights = _as_numpy(weights)
    segments = frames.shape[0]
    if weights.ndim != 3 or weights.shape[1:] != (segments, segments):
        raise MateffnetError(
            f"segment attention weights must be (heads, {segments}, {segments}) for {segments} frames, "
            f"got shape {weights.shape}"
        )
    heads = weights.shape[0]
    labels = _frame_labels(frame_labels, segments)
    received = received_attention(weights)

    column = min(1.7, 15.0 / segments)
    frame_height = column * frames.shape[1] / frames.shape[2]
    width = max(7.0, column * segments + 1.2)
    matrix_side = min(3.6, (width - 0.6) / heads - 0.8)
    heights = [frame_height + 0.35, 1.5, matrix_side + 0.7]
    fig = Figure(figsize=(width, sum(heights) + (0.5 if title else 0.1)), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=heights)

    for t, ax in enumerate(top.subplots(1, segments, squeeze=False)[0]):
        ax.imshow(frames[t])
        ax.set_title(labels[t], fontsize=8)
        ax.set_axis_off()

    ax = middle.subplots()
    bar_width = 0.8 / heads
    for head in range(heads):
        offsets = np.arange(segments) + (head - (heads - 1) / 2) * bar_width
        ax.bar(offsets, received[head], bar_width, color=HEAD_COLOURS[head % len(HEAD_COLOURS)], label=f"head {head + 1}")
    ax.axhline(1.0 / segments, color="0.35", linestyle="--", linewidth=1, label=f"uniform (1/{segments})")
    ax.set_xlim(-0.5, segments - 0.5)
    ax.set_xticks(range(segments), labels, fontsize=7)
    ax.set_ylabel("attention\nreceived", fontsize=8)
    ax.legend(fontsize=7, ncols=heads + 1, loc="upper right", frameon=False)
    ax.set_ylim(0, max(received.max(), 1.0 / segments) * 1.3)

    axes = bottom.subplots(1, heads, squeeze=False)[0]
    vmax = float(weights.max())
    for head, ax in enumerate(axes):
        image = ax.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(f"head {head + 1}: query (row) → key (column)", fontsize=8)
        ticks = range(0, segments, max(1, segments // 12))
        ax.set_xticks(list(ticks), [str(t + 1) for t in ticks], fontsize=7)
        ax.set_yticks(list(ticks), [str(t + 1) for t in ticks], fontsize=7)
        ax.set_xlabel("key segment", fontsize=8)
        ax.set_ylabel("query segment", fontsize=8)
    bottom.colorbar(image, ax=list(axes), shrink=0.9, label="weight")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_spatiotemporal_attention(frames, weights, path: str | Path, grid: tuple[int, int] | None = None, *,
                                  title: str | None = None, frame_labels: list[str] | None = None,
                                  alpha: float = 0.55) -> Path:
    """Per head, the attention each of the T×h×w positions receives, overlaid on its frame. → `path`.

    `grid` (h, w) defaults to the factorisation of tokens/T closest to the frames' aspect. The colour scale
    of a head runs from its least to its most attended position over all its frames (shared by the frames,
    so frames that draw more attention look hotter); each overlay's title gives its frame's share of that
    head's attention.
    """
    figure = spatiotemporal_attention_figure(frames, weights, grid, title=title, frame_labels=frame_labels, alpha=alpha)
    return save_figure(figure, path)


def spatiotemporal_attention_figure(frames, weights, grid: tuple[int, int] | None = None, *,
                                    title: str | None = None, frame_labels: list[str] | None = None,
                                    alpha: float = 0.55) -> Figure:
    """The figure `plot_spatiotemporal_attention` writes: row 0 the frames, row 1 + k head k's overlays."""
    frames = _check_frames(frames)
    weights = _as_numpy(weights)
    segments = frames.shape[0]
    if weights.ndim != 3 or weights.shape[1] != weights.shape[2] or weights.shape[1] % segments:
        raise MateffnetError(
            f"spatio-temporal attention weights must be (heads, T·h·w, T·h·w) with T = {segments} frames, "
            f"got shape {weights.shape}"
        )
    if grid is None:
        grid = feature_grid(weights.shape[1] // segments, frames.shape[1], frames.shape[2])
    maps = spatiotemporal_maps(weights, segments, grid)
    heads = maps.shape[0]
    labels = _frame_labels(frame_labels, segments)

    column = min(1.8, 15.0 / segments)
    row_height = column * frames.shape[1] / frames.shape[2] + 0.3
    fig = Figure(figsize=(max(6.0, column * segments + 1.4), row_height * (heads + 1) + (0.5 if title else 0.1)),
                 layout="constrained")
    axes = fig.subplots(heads + 1, segments, squeeze=False)
    for t in range(segments):
        axes[0, t].imshow(frames[t])
        axes[0, t].set_title(labels[t], fontsize=8)
    gray = frames.mean(axis=-1, keepdims=True).repeat(3, axis=-1).astype(np.uint8)
    for head in range(heads):
        upsampled = upsample(maps[head], frames.shape[1], frames.shape[2])  # (T, H, W)
        vmin, vmax = float(upsampled.min()), float(upsampled.max())
        vmax = vmax if vmax > vmin else vmin + 1e-12
        shares = maps[head].sum(axis=(1, 2))
        for t in range(segments):
            ax = axes[head + 1, t]
            ax.imshow(gray[t])
            image = ax.imshow(upsampled[t], cmap="inferno", alpha=alpha, vmin=vmin, vmax=vmax)
            ax.set_title(f"head {head + 1}: {100 * shares[t]:.0f}%", fontsize=8)
        fig.colorbar(image, ax=list(axes[head + 1]), shrink=0.85, label="received")
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w) → (T, height, width), bilinear (align_corners=False, as torch's interpolate)."""
    maps = np.asarray(maps, dtype=np.float64)
    t, h, w = maps.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bottom = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def _as_numpy(weights) -> np.ndarray:
    if hasattr(weights, "detach"):
        weights = weights.detach().float().cpu().numpy()
    weights = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise MateffnetError("attention weights must be finite and non-negative")
    return weights


def _check_frames(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MateffnetError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _frame_labels(labels: list[str] | None, segments: int) -> list[str]:
    if labels is None:
        return [f"segment {t + 1}" for t in range(segments)]
    if len(labels) != segments:
        raise MateffnetError(f"{len(labels)} frame labels given for {segments} frames")
    return [str(label) for label in labels]
