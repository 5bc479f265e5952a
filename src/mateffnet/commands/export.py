"""`mateffnet export`: each stream of a model folder to ONNX and/or TorchScript, with a table of what was written."""

from __future__ import annotations

from mateffnet.engine.export import export_model

TABLE_HEADER = ("stream", "format", "file", "MiB", "max |exported - pytorch|")


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...] = TABLE_HEADER) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def run(model: str, formats: list[str], *, out: str | None, opset: int | None, onnx_exporter: str, verify: bool) -> int:
    rows = []
    for format in dict.fromkeys(formats):
        results = export_model(model, format, out, opset=opset, onnx_exporter=onnx_exporter, verify=verify)
        rows += [(r.stream, r.format, str(r.path), f"{r.path.stat().st_size / 2**20:.1f}",
                  "not checked" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}") for r in results]
    print(format_table(rows))
    return 0
