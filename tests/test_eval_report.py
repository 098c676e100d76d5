"""The HTML report of ``caso eval``: metrics as formatted numbers in tables, never as raw JSON."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from PIL import Image

from caso_cli.eval.evaluate import EvalResult, PairRecord
from caso_cli.eval.report import MISSING, format_number, render_report

WHY = "needs backbone weights you already have (--weights PATH); caso never downloads them"

# what evaluate() returns for a classifier without --target, the toy oracle and user-given Inception weights
METRICS = {
    "psnr": {"available": True, "mean": 22.2098, "median": 20.2879, "min": 16.5966, "max": 148.1308},
    "ssim": {"available": True, "mean": 0.7552, "median": 0.7652, "min": 0.6051, "max": 0.9545},
    "classifier": {"available": True, "file": "m.safetensors", "target": None,
                   "edit_classes": {"no_mustache": 0.25, "mustache": 0.75},
                   "original_classes": {"no_mustache": 1.0, "mustache": 0.0}},
    "classifier_fd": {"available": True, "value": 0.123456, "features": "penultimate features of --classifier"},
    "classifier_kid": {"available": True, "mean": 1.234e-05, "std": float("nan"), "features": "same"},
    "oracle": {"available": True, "name": "toy",
               "changed": {"mustache": 0.75, "glasses": 0.5, "smile": 0.0, "hair": 0.0},
               "edit_classes": {"mustache": {"no": 0.25, "yes": 0.75}, "glasses": {"no": 0.75, "yes": 0.25},
                                "smile": {"no": 0.5, "yes": 0.5},
                                "hair": {"black": 0.25, "blond": 0.5, "red": 0.25}},
               "edit_face_found": 1.0},
    "lpips": {"available": False, "reason": WHY},
    "fid": {"available": True, "value": 1234.5678, "note": "originals vs edits, 2 images each: far too few",
            "weights": "pt_inception.pth"},
    "kid": {"available": True, "mean": -0.000123, "std": 0.0, "weights": "pt_inception.pth"},
    "inception_score": {"available": True, "mean": 1.0234, "std": 0.0012, "of": "edits", "weights": "x.pth"},
}


@pytest.fixture()
def result(tmp_path: Path) -> EvalResult:
    pairs = []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        o, e = tmp_path / f"{i}.png", tmp_path / f"{i}.mustache.5.png"
        Image.new("RGB", (32, 32), colour).save(o)
        Image.new("RGB", (32, 32), colour[::-1]).save(e)
        r = PairRecord(o, e, 20.0 + i, 0.8, False, clf_orig="no_mustache", clf_edit="mustache")
        r.oracle_orig = {"mustache": "no", "glasses": "no", "smile": "no", "hair": "red", "face_found": "True"}
        r.oracle_edit = {**r.oracle_orig, "mustache": "yes", "face_found": "False"}
        pairs.append(r)
    return EvalResult(pairs, METRICS, oracle_attributes=["mustache", "glasses", "smile", "hair"])


def _metrics_section(page: str) -> str:
    return page[page.index("<h2>Metrics</h2>"):page.index("<h2>Distributions</h2>")]


def test_format_number() -> None:
    assert [format_number(x) for x in (148.1308, 22.2098, 0.7552, 1.0, 0.0, 0, 7, 1.234e-05, -0.000123)] == [
        "148.1", "22.21", "0.755", "1.000", "0", "0", "7", "1.23e-05", "-0.000123"]
    assert format_number(None) == format_number(math.nan) == MISSING == "\u2014"
    assert format_number(True) == "yes" and format_number(math.inf) == "∞"
    assert format_number(["a", 0.5]) == "a, 0.500" and format_number([]) == MISSING


def test_report_shows_metrics_as_tables_of_formatted_numbers(result: EvalResult) -> None:
    page = render_report(result)
    body = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    assert "{" not in body and "}" not in body  # no JSON dict anywhere (the stylesheet aside)
    section = _metrics_section(page)
    assert not re.search(r"\bavailable\b", section) and "&quot;" not in section  # the key, not "unavailable"
    cells = [c for c in re.findall(r"<td[^>]*>([^<]*)</td>", section) if c]  # an empty notes cell aside
    # PSNR stats, one per cell, at sensible precision (148.13... -> 148.1, 22.2098 -> 22.21)
    assert ["22.21", "20.29", "16.60", "148.1"] == cells[:4]
    assert ["0.755", "0.765", "0.605", "0.955"] == cells[4:8]
    assert re.search(r"<th>mean</th><th>median</th><th>min</th><th>max</th>", section)
    # per-class and per-attribute dicts are sub-tables: one row per attribute, one cell per class
    assert "<th>no_mustache</th><th>mustache</th></tr><tr><td>0.250</td><td>0.750</td>" in section
    assert "<th>mustache</th><th>glasses</th><th>smile</th><th>hair</th></tr><tr><td>0.750</td><td>0.500</td>" \
           "<td>0</td><td>0</td>" in section
    assert ('<tr><th class="l">hair</th><td><span class="c">black</span> 0.250</td><td><span class="c">blond'
            '</span> 0.500</td><td><span class="c">red</span> 0.250</td></tr>') in section
    assert section.count('<th class="l">smile</th>') == 1
    assert "<th>edit_face_found</th></tr><tr><td>1.000</td>" in section
    # very large, very small, negative and missing numbers
    assert "<td>1234.6</td>" in section and "<td>1.23e-05</td>" in section and "<td>-0.000123</td>" in section
    assert '<th>std</th></tr><tr><td>1.23e-05</td><td class="na">\u2014</td>' in section  # NaN
    assert "target: \u2014" in section and "file: m.safetensors" in section  # None, and words as notes
    assert "note: originals vs edits, 2 images each: far too few" in section
    # an unavailable metric: a dash for its values and the reason
    lpips = re.search(r"<tr><th class=\"l\">lpips.*?</tr>", section).group(0)
    assert '<td class="na">\u2014</td>' in lpips and f"unavailable: {WHY}" in lpips
    # every metric key is shown (--fail-under names), with a readable title for the known ones
    for name in METRICS:
        assert f'<th class="l">{name}' in section
    assert "PSNR (dB)" in section and "Inception Score" in section


def test_report_pair_rows_list_the_oracle_attributes_only(result: EvalResult) -> None:
    pairs = render_report(result).split("<h2>Pairs</h2>")[1]
    assert pairs.count("mustache: no → yes") == 2 and "face_found" not in pairs


def test_report_of_a_real_eval_has_no_json(tmp_path: Path) -> None:
    import numpy as np

    from caso_cli.config import EvalConfig
    from caso_cli.eval.evaluate import evaluate
    from caso_cli.eval.pairing import pair_by_name
    from caso_cli.toyworld import render as R

    params = R.sample_params(4, seed=3, config=R.RenderConfig(p_mustache=0.0))
    orig, edit = R.render(params), R.render(params.replace(mustache=np.array([1, 1, 0, 1])))
    for folder, images, suffix in (("o", orig, ""), ("e", edit, ".mustache.5")):
        (tmp_path / folder).mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im).save(tmp_path / folder / f"{i:03d}{suffix}.png")
    res = evaluate(pair_by_name(tmp_path / "o", tmp_path / "e"), EvalConfig(oracle="toy"))
    section = _metrics_section(render_report(res))
    assert "{" not in section and not re.search(r"\bavailable\b", section)
    assert "<th>mustache</th><th>glasses</th><th>smile</th><th>hair</th></tr><tr><td>0.750</td>" in section
    assert f"<td>{format_number(res.metrics['psnr']['median'])}</td>" in section
