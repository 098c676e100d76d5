"""The ``caso eval --report`` page: one self-contained HTML file (inline PNG thumbnails and SVG plots)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from caso_cli.eval.evaluate import EvalResult

THUMB = 96  # thumbnail side, pixels (small images are enlarged without smoothing)
MAX_ROWS_WITH_THUMBS = 200  # later rows are listed without thumbnails to keep the file small
COLOURS = {"original": "#1f77b4", "edit": "#d62728"}

_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{image-rendering:pixelated;display:block}
.plots{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{font-size:12px;color:#555}
.na{color:#888}table.m>tbody>tr>td,table.m>tbody>tr>th{vertical-align:top;text-align:left}
table.sub{margin:1px 0}table.sub td,table.sub th{border-color:#e3e3e3;padding:1px 6px}
.k{color:#555;font-size:12px;margin-top:3px}.u{color:#666;font-weight:normal;font-size:12px}
.note{color:#444;font-size:12px}.c{color:#666}"""
MISSING = "\u2014"  # an em dash: a value that is absent, None or not a number
#: how each metric of EvalResult.metrics is titled (its key, which --fail-under uses, is shown too)
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "classifier": "classifier", "classifier_fd": "Fréchet distance, "
          "classifier features", "classifier_kid": "KID estimator, classifier features", "oracle": "oracle",
          "lpips": "LPIPS", "fid": "FID", "kid": "KID", "inception_score": "Inception Score"}


def _thumb(path: Path) -> str:
    from PIL import Image

    from caso_cli.io.images import load_image

    img = load_image(path)
    scale = THUMB / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    buf = io.BytesIO()
    img.resize(size, resample).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_svg(values: list[float], title: str, bins: int = 20, width: int = 320, height: int = 160) -> str:
    """An inline SVG bar chart of ``values``' histogram."""
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    lo, hi = (float(a.min()), float(a.max())) if len(a) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(a, bins=bins, range=(lo, hi))
    pad, top = 24, max(int(counts.max()) if len(a) else 1, 1)
    bw = (width - 2 * pad) / bins
    bars = "".join(
        f'<rect x="{pad + i * bw:.1f}" y="{height - pad - c / top * (height - 2 * pad):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * (height - 2 * pad):.1f}" fill="#4c78a8"><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: '
        f'{c}</title></rect>' for i, c in enumerate(counts))
    axis = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>'
            f'<text x="{pad}" y="{height - 6}" font-size="11">{lo:.3g}</text>'
            f'<text x="{width - pad}" y="{height - 6}" font-size="11" text-anchor="end">{hi:.3g}</text>'
            f'<text x="{pad}" y="14" font-size="12">{html.escape(title)} (max bar {top})</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{bars}{axis}</svg>'


def pca_svg(fo: np.ndarray, fe: np.ndarray, classes: list[str], pred: np.ndarray, size: int = 360) -> str:
    """Originals and edits on the first two principal axes of their classifier features, with the class means.

    A class mean is the mean feature of all images (originals and edits) the classifier puts in that class.
    """
    from caso_cli.eval.metrics import pca_2d

    allf = np.concatenate([fo, fe])
    xy, mean, axes = pca_2d(allf)
    means = {c: (allf[pred == k].mean(axis=0) - mean) @ axes.T for k, c in enumerate(classes) if (pred == k).any()}
    pts = np.concatenate([xy] + [m[None] for m in means.values()])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pad = 30

    def at(p: np.ndarray) -> tuple[float, float]:
        q = (p - lo) / span
        return pad + q[0] * (size - 2 * pad), size - pad - q[1] * (size - 2 * pad)

    dots = []
    for kind, block in (("original", xy[:len(fo)]), ("edit", xy[len(fo):])):
        for p in block:
            x, y = at(p)
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLOURS[kind]}" fill-opacity="0.6"/>')
    marks = []
    for c, m in means.items():
        x, y = at(m)
        marks.append(f'<path d="M{x - 7:.1f},{y - 7:.1f}L{x + 7:.1f},{y + 7:.1f}M{x - 7:.1f},{y + 7:.1f}'
                     f'L{x + 7:.1f},{y - 7:.1f}" stroke="#000" stroke-width="2.5"/>'
                     f'<text x="{x + (9 if x < size / 2 else -9):.1f}" y="{y - 6:.1f}" font-size="12" '
                     f'text-anchor="{"start" if x < size / 2 else "end"}">mean: {html.escape(c)}</text>')
    legend = "".join(f'<circle cx="{pad + 110 * i}" cy="12" r="4" fill="{col}"/><text x="{pad + 8 + 110 * i}" '
                     f'y="16" font-size="12">{kind}s</text>' for i, (kind, col) in enumerate(COLOURS.items()))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
            f'<rect x="0" y="0" width="{size}" height="{size}" fill="#fafafa" stroke="#ccc"/>'
            + "".join(dots) + "".join(marks) + legend + "</svg>")


def format_number(value: Any) -> str:
    """A metric value as text: floats rounded to their size (148.1, 22.21, 0.755, 0.000123), ints as they
    are, booleans as yes/no, None and NaN as an em dash. Not HTML-escaped."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        a = abs(value)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 10:
            return f"{value:.2f}"
        if a >= 0.01:
            return f"{value:.3f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_number(v) for v in value) if value else MISSING
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool too


def _cell(value: Any) -> str:
    text = html.escape(format_number(value))
    return f'<td class="na">{text}</td>' if text == MISSING else f"<td>{text}</td>"


def _row_table(values: dict[str, Any]) -> str:
    """Numbers side by side under their keys."""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in values)
    return f'<table class="sub"><tr>{head}</tr><tr>{"".join(_cell(v) for v in values.values())}</tr></table>'


def _values(entry: dict[str, Any], nested: bool = False) -> str:
    """The numbers of one metric: its plain numbers in a row, each nested dict below under its key (a dict of
    numbers as a row, a dict of such dicts as one sub-row per key, e.g. per attribute then per class). Below the
    top level (``nested``: e.g. one edit group) words join the numbers' row; at the top they are notes."""
    numbers = {k: v for k, v in entry.items() if _is_number(v) or (nested and not isinstance(v, dict))}
    parts = [_row_table(numbers)] if numbers else []
    for key, value in entry.items():
        if not isinstance(value, dict):
            continue
        if value and all(isinstance(v, dict) and not any(isinstance(x, dict) for x in v.values())
                         for v in value.values()):
            rows = "".join(
                f'<tr><th class="l">{html.escape(str(k))}</th>'
                + "".join(f'<td><span class="c">{html.escape(str(c))}</span> {html.escape(format_number(x))}</td>'
                          for c, x in v.items()) + "</tr>"
                for k, v in value.items())
            body = f'<table class="sub">{rows}</table>'
        elif value and all(not isinstance(v, dict) for v in value.values()):
            body = _row_table(value)
        elif value:
            body = _values(value, nested=True)
        else:
            body = f'<span class="na">{MISSING}</span>'
        parts.append(f'<div class="k">{html.escape(str(key))}</div>{body}')
    return "".join(parts) or f'<span class="na">{MISSING}</span>'


def _notes(entry: dict[str, Any]) -> str:
    """The words of one metric (weights used, what its features are, the classifier file, ...)."""
    lines = [f"{html.escape(str(k))}: {html.escape(format_number(v))}" for k, v in entry.items()
             if not _is_number(v) and not isinstance(v, dict)]
    return "<br>".join(lines)


def _metric_rows(metrics: dict[str, dict[str, Any]]) -> str:
    """One row per metric: its name, its numbers as small tables, its notes; an unavailable one shows why."""
    rows = ['<tr><th class="l">metric</th><th class="l">values</th><th class="l">notes</th></tr>']
    for name, entry in metrics.items():
        label = LABELS.get(name)
        title = (f'<th class="l">{html.escape(name)}'
                 + (f'<br><span class="u">{html.escape(label)}</span>' if label and label != name else "") + "</th>")
        if entry.get("available"):
            shown = {k: v for k, v in entry.items() if k != "available"}
            rows.append(f"<tr>{title}<td>{_values(shown)}</td><td class=\"note\">{_notes(shown)}</td></tr>")
        else:
            rows.append(f'<tr>{title}<td class="na">{MISSING}</td><td class="note na">unavailable: '
                        f'{html.escape(str(entry.get("reason", "")))}</td></tr>')
    return "".join(rows)


def _pair_rows(result: EvalResult) -> str:
    clf = bool(result.classes)
    oracle = bool(result.pairs and result.pairs[0].oracle_edit is not None)
    attrs = result.oracle_attributes
    lpips = bool(result.pairs and result.pairs[0].lpips is not None)
    head = ['<th>#</th>', '<th class="l">original</th>', '<th class="l">edit</th>', "<th>PSNR</th>", "<th>SSIM</th>"]
    head += ["<th>LPIPS</th>"] if lpips else []
    head += ['<th class="l">class before → after</th>'] if clf else []
    head += ['<th class="l">oracle: changed</th>'] if oracle else []
    rows = ["<tr>" + "".join(head) + "</tr>"]
    for i, r in enumerate(result.pairs):
        if i < MAX_ROWS_WITH_THUMBS:
            cells = [f'<td class="l"><img src="{_thumb(p)}" alt="{html.escape(p.name)}" '
                     f'title="{html.escape(str(p))}"><small>{html.escape(p.name)}</small></td>'
                     for p in (r.orig, r.edit)]
        else:
            cells = [f'<td class="l">{html.escape(p.name)}</td>' for p in (r.orig, r.edit)]
        row = [f"<td>{i + 1}</td>", *cells, f"<td>{r.psnr:.2f}</td>", f"<td>{r.ssim:.3f}</td>"]
        if lpips:
            row.append(f"<td>{r.lpips:.3f}</td>")
        if clf:
            row.append(f'<td class="l">{html.escape(str(r.clf_orig))} → {html.escape(str(r.clf_edit))}</td>')
        if oracle and r.oracle_orig and r.oracle_edit:
            changed = [f"{a}: {r.oracle_orig[a]} → {r.oracle_edit.get(a, MISSING)}"
                       for a in (attrs or [a for a in r.oracle_orig if a != "face_found"])
                       if r.oracle_orig.get(a) != r.oracle_edit.get(a)]
            row.append(f'<td class="l">{html.escape("; ".join(changed) or "nothing")}</td>')
        rows.append("<tr>" + "".join(row) + "</tr>")
    return "".join(rows)


def render_report(result: EvalResult, title: str = "caso eval") -> str:
    """The whole page as a string."""
    plots = [histogram_svg([r.psnr for r in result.pairs], "PSNR (dB)"),
             histogram_svg([r.ssim for r in result.pairs], "SSIM")]
    if result.pairs and result.pairs[0].lpips is not None:
        plots.append(histogram_svg([r.lpips for r in result.pairs if r.lpips is not None], "LPIPS"))
    figures = "".join(f"<figure>{p}</figure>" for p in plots)
    if result.features_orig is not None and result.features_edit is not None and len(result.pairs) >= 2:
        pred = np.array([result.classes.index(r.clf_orig or "") for r in result.pairs]
                        + [result.classes.index(r.clf_edit or "") for r in result.pairs])
        figures += ("<figure>" + pca_svg(result.features_orig, result.features_edit, result.classes, pred)
                    + "<figcaption>Classifier features, first two principal axes; × marks the mean of the "
                      "images put in each class.</figcaption></figure>")
    note = ""
    if len(result.pairs) > MAX_ROWS_WITH_THUMBS:
        note = f"<p>Thumbnails for the first {MAX_ROWS_WITH_THUMBS} pairs only.</p>"
    unpaired = len(result.unpaired_originals) + len(result.unpaired_edits)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(result.pairs)} pairs; {unpaired} files without a partner.</p>"
            f'<h2>Metrics</h2><table class="m">{_metric_rows(result.metrics)}</table>'
            f'<h2>Distributions</h2><div class="plots">{figures}</div>'
            f"<h2>Pairs</h2>{note}<table>{_pair_rows(result)}</table></body></html>\n")


def write_report(result: EvalResult, path: Path, title: str = "caso eval") -> Path:
    """Write the page atomically to ``path``."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render_report(result, title))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; a report is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
