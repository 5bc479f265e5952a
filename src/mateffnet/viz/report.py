"""One self-contained HTML page with a run's results: `write_report(path, results, images)`.

The page has no external resources and no JavaScript: CSS is inline and images are embedded as base64
data URIs (a Content-Security-Policy in the page forbids anything else), so `report.html` can be mailed,
archived or opened offline as one file.

The `results` dict (what an evaluation produces; JSON-compatible):

    {
      "title": "MAT-EffNet on the synthetic demo dataset",      # optional
      "description": "One paragraph under the title.",          # optional
      "class_names": ["ball_blue", "ball_green", ...],          # the per-class table's rows, in this order
      "class_groups": {"slide_left": "motion", ...},            # optional: a group per class (all or some)
      "videos": 90,                                             # optional: test videos
      "streams": {                                              # at least one; rgb, flow, fused come first
        "rgb":   {"top1": 0.61, "top5": 0.97, "mean_class": 0.60, "videos": 90,
                  "per_class": {"ball_blue": 1.0, ...}},
        "flow":  {...},
        "fused": {...}
      },
      "fusion_weights": {"rgb": 1.0, "flow": 1.0},              # optional
      "details": {"dataset": "...", "device": "cpu", ...},      # optional: shown as a key/value table
      "notes": ["...", ...]                                     # optional: shown as a list
    }

This is what `mateffnet.engine.scoring.summarize` returns (plus the optional keys). Accuracies are
fractions in [0, 1] (shown as percentages); any of them may be null or NaN (shown as "—", e.g. a class
without test videos).
`top1` is the fraction of test videos whose best-scoring class is right, `top5` the same for the five
best, `mean_class` the mean over classes of each class's top-1 (TSN's "accuracy"); `per_class` maps a
class name to that class's top-1. Unknown keys are refused, so a misspelt metric does not silently vanish.

`images` maps a caption to a PNG (or JPEG/SVG) file, in display order; a caption "Section/caption"
puts the image under the heading "Section" (e.g. "Confusion matrices/fused"); images without a section
go under "Figures".
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from pathlib import Path

from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_write_text

RESULT_KEYS = ("title", "description", "class_names", "class_groups", "videos", "streams", "fusion_weights", "details",
               "notes")
STREAM_KEYS = ("top1", "top5", "mean_class", "videos", "per_class")
METRICS = (("top1", "top-1"), ("top5", "top-5"), ("mean_class", "mean class accuracy"))
STREAM_ORDER = ("rgb", "flow", "fused")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
DEFAULT_SECTION = "Figures"
# PNGs are shown at this fraction of their pixel width: figures saved at 110 dpi then look like ~180 dpi
# prints (sharp on high-density screens) and two confusion matrices fit side by side.
PNG_DISPLAY_SCALE = 0.6


def write_report(path: str | Path, results: dict, images: dict[str, str | Path] | None = None) -> Path:
    """Write the HTML report for `results` (schema above) with `images` embedded; returns `path`."""
    check_results(results)
    sections = _image_sections(images or {})
    atomic_write_text(path, render_report(results, sections))
    return Path(path)


def check_results(results: dict) -> None:
    """Raise MateffnetError naming the first key or value that does not fit the schema."""
    if not isinstance(results, dict):
        raise MateffnetError(f"results must be a dict, got {type(results).__name__}")
    _check_keys("results", results, RESULT_KEYS)
    streams = results.get("streams")
    if not isinstance(streams, dict) or not streams:
        raise MateffnetError("results['streams'] must be a non-empty dict of stream name → metrics")
    names = results.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise MateffnetError("results['class_names'] must be a list of strings")
    for stream, metrics in streams.items():
        where = f"results['streams'][{stream!r}]"
        if not isinstance(metrics, dict):
            raise MateffnetError(f"{where} must be a dict of metrics, got {type(metrics).__name__}")
        _check_keys(where, metrics, STREAM_KEYS)
        for key, _ in METRICS:
            _check_fraction(f"{where}[{key!r}]", metrics.get(key))
        per_class = metrics.get("per_class")
        if per_class is not None:
            if not isinstance(per_class, dict):
                raise MateffnetError(f"{where}['per_class'] must be a dict of class name → accuracy")
            if names is None:
                raise MateffnetError(f"{where} has per_class accuracies but results['class_names'] is missing")
            unknown = [name for name in per_class if name not in names]
            if unknown:
                raise MateffnetError(f"{where}['per_class'] names classes not in class_names: {', '.join(unknown[:5])}")
            for name, value in per_class.items():
                _check_fraction(f"{where}['per_class'][{name!r}]", value)
    for key in ("class_groups", "fusion_weights", "details"):
        if results.get(key) is not None and not isinstance(results[key], dict):
            raise MateffnetError(f"results[{key!r}] must be a dict")
    notes = results.get("notes")
    if notes is not None and (not isinstance(notes, list) or not all(isinstance(n, str) for n in notes)):
        raise MateffnetError("results['notes'] must be a list of strings")


def render_report(results: dict, sections: dict[str, list[tuple[str, str, int | None]]]) -> str:
    """The HTML text. `sections`: heading → [(caption, data URI, display width in px or None)], as
    `write_report` builds from `images`."""
    from mateffnet import __version__

    title = results.get("title") or "mateffnet results"
    streams = _ordered_streams(_without_nan(results["streams"]))
    parts = [f"<h1>{_e(title)}</h1>"]
    if results.get("description"):
        parts.append(f'<p class="lead">{_e(results["description"])}</p>')
    parts.append(_summary_table(streams, results.get("fusion_weights")))
    groups = results.get("class_groups") or {}
    names = results.get("class_names") or []
    if groups and any(m.get("per_class") for m in streams.values()):
        parts.append(_group_table(streams, names, groups))
    if any(m.get("per_class") for m in streams.values()):
        parts.append(_per_class_table(streams, names, groups))
    for heading, figures in sections.items():
        items = "".join(_figure(caption, uri, width) for caption, uri, width in figures)
        parts.append(f'<section><h2>{_e(heading)}</h2><div class="figures">{items}</div></section>')
    if results.get("notes"):
        parts.append("<section><h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in results["notes"]) + "</ul></section>")
    if results.get("details"):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_plain(v))}</td></tr>" for k, v in results["details"].items())
        parts.append(f'<section><h2>Details</h2><table class="details">{rows}</table></section>')
    parts.append(
        "<footer>top-1: fraction of test videos whose highest-scoring class is the true one; top-5: the true "
        "class is among the five highest; mean class accuracy: the mean over classes of each class's top-1 "
        f"(TSN's \u201caccuracy\u201d). Best value in each column or row highlighted. Made by mateffnet {__version__}.</footer>"
    )
    return _PAGE.format(title=_e(title), css=_CSS, body="\n".join(parts))


def _summary_table(streams: dict, fusion_weights: dict | None) -> str:
    best = {key: _best([m.get(key) for m in streams.values()]) for key, _ in METRICS}
    header = "".join(f"<th>{label}</th>" for _, label in METRICS)
    rows = []
    for name, metrics in streams.items():
        cells = "".join(_accuracy_cell(metrics.get(key), metrics.get(key) == best[key] and len(streams) > 1)
                        for key, _ in METRICS)
        videos = metrics.get("videos")
        rows.append(f"<tr><th>{_e(_stream_label(name))}</th>{cells}<td>{'' if videos is None else _e(videos)}</td></tr>")
    weights = ""
    if fusion_weights:
        weights = ('<p class="small">Fusion: weighted average of the streams\u2019 softmax scores, weights '
                   + ", ".join(f"{_e(k)} {_e(_plain(v))}" for k, v in fusion_weights.items()) + ".</p>")
    return (f'<section><h2>Accuracy</h2><table class="metrics"><tr><th>stream</th>{header}<th>videos</th></tr>'
            f'{"".join(rows)}</table>{weights}</section>')


def _group_table(streams: dict, names: list[str], groups: dict) -> str:
    """Mean per-class accuracy of each class group, per stream."""
    group_names = list(dict.fromkeys(groups[n] for n in names if n in groups))
    with_classes = {n: m for n, m in streams.items() if m.get("per_class")}
    header = "".join(f"<th>{_e(_stream_label(n))}</th>" for n in with_classes)
    rows = []
    for group in group_names:
        members = [n for n in names if groups.get(n) == group]
        values = []
        for metrics in with_classes.values():
            known = [metrics["per_class"][c] for c in members if metrics["per_class"].get(c) is not None]
            values.append(sum(known) / len(known) if known else None)
        best = _best(values)
        cells = "".join(_accuracy_cell(v, v == best and len(values) > 1) for v in values)
        rows.append(f"<tr><th>{_e(group)} <span class=\"small\">({len(members)} classes)</span></th>{cells}</tr>")
    return (f'<section><h2>By class group</h2><p class="small">Mean of the per-class accuracies of the classes '
            f'in each group.</p><table class="metrics"><tr><th>group</th>{header}</tr>{"".join(rows)}</table></section>')


def _per_class_table(streams: dict, names: list[str], groups: dict) -> str:
    with_classes = {n: m for n, m in streams.items() if m.get("per_class")}
    group_header = "<th>group</th>" if groups else ""
    header = "".join(f"<th>{_e(_stream_label(n))}</th>" for n in with_classes)
    rows = []
    for name in names:
        values = [m["per_class"].get(name) for m in with_classes.values()]
        best = _best(values)
        group = f'<td class="group">{_e(groups.get(name, ""))}</td>' if groups else ""
        cells = "".join(_accuracy_cell(v, v == best and len(values) > 1, bar=True) for v in values)
        rows.append(f"<tr><th>{_e(name)}</th>{group}{cells}</tr>")
    return (f'<section><h2>Per-class accuracy</h2><table class="metrics per-class"><tr><th>class</th>{group_header}'
            f'{header}</tr>{"".join(rows)}</table></section>')


def _figure(caption: str, uri: str, width: int | None) -> str:
    size = "" if width is None else f' width="{width}"'
    return f'<figure><img src="{uri}" alt="{_e(caption)}"{size}><figcaption>{_e(caption)}</figcaption></figure>'


def _accuracy_cell(value, best: bool, bar: bool = False) -> str:
    classes = ["best"] if best and value is not None else []
    if value is None:
        return '<td class="missing">—</td>'
    style = ""
    if bar:
        percent = f"{100 * value:.1f}%"
        style = f' style="background-size: {percent} 100%"'
        classes.append("bar")
    return f'<td class="{" ".join(classes)}"{style}>{100 * value:.1f}%</td>'


def _image_sections(images: dict) -> dict[str, list[tuple[str, str, int | None]]]:
    sections: dict[str, list[tuple[str, str, int | None]]] = {}
    for key, file in images.items():
        section, _, caption = str(key).rpartition("/")
        file = Path(file)
        kind = IMAGE_TYPES.get(file.suffix.lower())
        if kind is None:
            raise MateffnetError(f"report image {file}: unsupported type; expected one of {', '.join(IMAGE_TYPES)}")
        try:
            data = file.read_bytes()
        except OSError as error:
            raise MateffnetError(f"report image {key!r}: cannot read {file} ({error.strerror})") from error
        if kind == "image/png" and not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise MateffnetError(f"report image {file}: not a PNG file")
        width = None
        if kind == "image/png":
            width = max(1, round(int.from_bytes(data[16:20], "big") * PNG_DISPLAY_SCALE))
        uri = f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
        sections.setdefault(section or DEFAULT_SECTION, []).append((caption, uri, width))
    return sections


def _without_nan(streams: dict) -> dict:
    """NaN accuracies (nothing to measure) become None, so that they show as "—" and are never "best"."""
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return {name: {key: ({c: clean(v) for c, v in value.items()} if key == "per_class" and value else clean(value))
                   for key, value in metrics.items()} for name, metrics in streams.items()}


def _ordered_streams(streams: dict) -> dict:
    order = [n for n in STREAM_ORDER if n in streams] + [n for n in streams if n not in STREAM_ORDER]
    return {n: streams[n] for n in order}


def _stream_label(name: str) -> str:
    return {"rgb": "RGB (spatial)", "flow": "flow (temporal)", "fused": "fused"}.get(name, name)


def _best(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _check_keys(where: str, data: dict, known: tuple[str, ...]) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        raise MateffnetError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; expected some of {', '.join(known)}")


def _check_fraction(where: str, value) -> None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise MateffnetError(f"{where} must be an accuracy in [0, 1] (a fraction, not a percentage) or null, got {value!r}")


def _plain(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""

_CSS = """
:root { --ink: #1d2430; --muted: #5b6678; --line: #d9dee7; --accent: #2f6fde; --best: #e3f4e6; --best-ink: #11602a; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 40px; background: #fff; min-height: 100vh;
       box-shadow: 0 0 24px rgba(20, 30, 50, 0.06); }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
p.lead { color: var(--muted); margin: 0 0 10px; max-width: 900px; }
.small { color: var(--muted); font-size: 13px; font-weight: normal; }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 14px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child { text-align: left; }
tr:first-child th { background: #eef1f6; font-weight: 600; text-align: center; }
tr:first-child th:first-child { text-align: left; }
table.metrics td { min-width: 92px; }
td.best { background-color: var(--best); color: var(--best-ink); font-weight: 700; }
td.bar { background-image: linear-gradient(rgba(47, 111, 222, 0.16), rgba(47, 111, 222, 0.16));
         background-repeat: no-repeat; background-position: left center; }
td.best.bar { background-color: transparent;
              background-image: linear-gradient(rgba(36, 150, 70, 0.25), rgba(36, 150, 70, 0.25)); }
td.missing { color: var(--muted); }
td.group { text-align: left; color: var(--muted); }
table.details th { text-align: left; font-weight: 600; background: none; }
table.details td { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff;
         max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
ul { padding-left: 20px; }
footer { margin-top: 36px; padding-top: 10px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
"""
