"""Pictures of recognition over time: the timeline PNG (classes over time, one row per stream and a fused
row) and a self-contained HTML page with the timeline and the video's thumbnails under it.

Each window is drawn as a bar over the time it stands for (its centre ± half a stride), coloured by its
top-1 class and as opaque as that class's probability. Pure matplotlib on the Agg canvas.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mateffnet.fileio import atomic_write_text
from mateffnet.viz.plots import save_figure

ROWS = ("fused", "rgb", "flow")


def class_colours(count: int) -> np.ndarray:
    """One distinct RGBA colour per class (tab10, then tab20 beyond 10 classes, then cycled)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N) for i in range(count)])


def plot_timeline(spans: np.ndarray, probabilities: dict[str, np.ndarray], class_names: list[str], path: str | Path,
                  title: str = "", segments: list[dict] | None = None) -> Path:
    """`spans` (W, 2) seconds each window stands for; `probabilities[row]` (W, classes) for rows "fused", "rgb",
    "flow" (those present); `segments` (optional) the merged labelled segments, drawn as their own row."""
    rows = [row for row in ROWS if row in probabilities]
    colours = class_colours(len(class_names))
    labels = rows + (["segments"] if segments is not None else [])
    fig = Figure(figsize=(9, 0.5 + 0.45 * len(labels) + 0.35 * ((len(class_names) + 5) // 6)))
    ax = fig.add_subplot()
    for y, row in enumerate(rows):
        top = probabilities[row].argmax(1)
        alpha = probabilities[row].max(1)
        for (start, end), cls, a in zip(spans, top, alpha):
            ax.barh(y, end - start, left=start, height=0.8, color=colours[cls], alpha=float(0.25 + 0.75 * a), linewidth=0)
    if segments is not None:
        y = len(rows)
        for segment in segments:
            ax.barh(y, segment["end"] - segment["start"], left=segment["start"], height=0.8,
                    color=colours[class_names.index(segment["label"])], linewidth=0.5, edgecolor="black")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, float(spans[:, 1].max()) if len(spans) else 1.0)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=9)
    handles = [Patch(color=colours[i], label=name) for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(class_names)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07 + 0.05 * ((len(class_names) - 1) // 6), 1, 1))
    return save_figure(fig, path)


def jpeg_data_uri(image: np.ndarray, width: int = 112) -> str:
    """uint8 (H, W, 3) RGB → a small JPEG as a data: URI (the page needs no other file)."""
    from PIL import Image

    picture = Image.fromarray(image)
    picture = picture.resize((width, max(1, round(picture.height * width / picture.width))))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_timeline_page(path: str | Path, title: str, timeline_png: str | Path, thumbnails: list[tuple[float, str, str]],
                        summary: list[tuple[str, str]], segments: list[dict] | None = None) -> Path:
    """One HTML file: `summary` (name, value) rows, the timeline picture, the merged segments and the
    `thumbnails` ((time s, label, data URI)) in time order, everything embedded."""
    png = base64.b64encode(Path(timeline_png).read_bytes()).decode("ascii")
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary)
    thumbs = "".join(
        f'<figure><img src="{uri}" alt="frame at {t:.1f} s"><figcaption>{t:.1f} s<br>{esc(label)}</figcaption></figure>'
        for t, label, uri in thumbnails)
    segment_rows = ""
    if segments:
        segment_rows = "<h2>Segments</h2><table><tr><th>start (s)</th><th>end (s)</th><th>class</th><th>mean prob</th></tr>" + "".join(
            f"<tr><td>{s['start']:.2f}</td><td>{s['end']:.2f}</td><td>{esc(s['label'])}</td><td>{s['prob']:.2f}</td></tr>"
            for s in segments) + "</table>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }} th, td {{ padding: 2px 10px; text-align: left; }}
img.timeline {{ max-width: 100%; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; text-align: center; font-size: 11px; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table>{rows}</table>
<img class="timeline" src="data:image/png;base64,{png}" alt="classes over time per stream">
{segment_rows}
<h2>Frames</h2><div class="thumbs">{thumbs}</div>
</body></html>
"""
    atomic_write_text(path, page)
    return Path(path)
