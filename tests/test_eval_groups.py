"""`caso eval` per edit group: +5 and -5 edits are two groups with their own targets (issue 17 item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caso_cli.eval.pairing import EditGroup, edit_group, pair_by_name
from caso_cli.io.png import save_png
from caso_cli.toyworld import render as R
from tests.tiny import run_main

N = 8
ADDED = np.array([1, 1, 1, 1, 1, 1, 0, 0])  # +5 edits: 6 of 8 faces gain a mustache
REMOVED = np.array([1, 1, 0, 0, 0, 0, 0, 0])  # -5 edits: 2 of 8 faces lose theirs
PROVENANCE = {"caso:model": "toy", "caso:embeddings": "toy-mustache", "caso:classes": "mustache"}


@pytest.fixture()
def both(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Faces a0..a7 without a mustache edited at +5 (file names only, no caso:* chunks), faces b0..b7 with one edited
    at -5 (caso:* chunks, as caso edit and caso demo write them). Returns the folders, and the edits in pair order."""
    add = R.sample_params(N, seed=3, config=R.RenderConfig(p_mustache=0.0))
    rm = R.sample_params(N, seed=4, config=R.RenderConfig(p_mustache=1.0))
    o, e = tmp_path / "orig", tmp_path / "edit"
    o.mkdir()
    e.mkdir()
    edits = {}
    for prefix, params, after in (("a", add, add.replace(mustache=ADDED)), ("b", rm, rm.replace(mustache=1 - REMOVED))):
        for i, (before, edited) in enumerate(zip(R.render(params), R.render(after), strict=True)):
            Image.fromarray(before).save(o / f"{prefix}{i}.png")
            if prefix == "a":
                Image.fromarray(edited).save(e / f"a{i}.mustache.5.png")
            else:
                save_png(Image.fromarray(edited), e / f"b{i}.mustache.-5.png", {**PROVENANCE, "caso:scales": "-5"})
            edits[f"{prefix}{i}"] = edited
    order = [edits[k] for k in sorted(edits)]  # pairs are sorted by edit path: a0..a7, b0..b7
    return o, e, np.stack(order[:N]), np.stack(order[N:])


def test_edit_group_from_file_name_and_provenance(tmp_path: Path) -> None:
    o = tmp_path / "000.png"
    cases = {"000.mustache.5.png": ("mustache=5", "file name"), "000.smile.-2.5.png": ("smile=-2.5", "file name"),
             "000.mustache+smile.5,-3.png": ("mustache=5+smile=-3", "file name"),
             "000.mustache+smile.2.png": ("mustache=2+smile=2", "file name"),
             "000.recon.png": ("recon", "file name"), "000.recon.hair-blond.1.5.png": ("recon hair-blond=1.5",
                                                                                          "file name"),
             "000.x.png": ("x", "file name"), "000.png": ("ungrouped", "none")}
    for name, (label, source) in cases.items():
        Image.new("RGB", (4, 4)).save(tmp_path / name)
        g = edit_group(o, tmp_path / name)
        assert (g.label, g.source) == (label, source), name
    assert edit_group(o, tmp_path / "000.smile.-2.5.png").scale_values() == (-2.5,)
    # the caso:* chunks name the embedding and the class; the file name only the --attr label
    save_png(Image.new("RGB", (4, 4)), tmp_path / "000.mustache.-5.png", {**PROVENANCE, "caso:scales": "-5"})
    g = edit_group(o, tmp_path / "000.mustache.-5.png")
    assert g == EditGroup(("toy-mustache",), ("mustache",), ("-5",), "", "provenance")
    assert g.label == "toy-mustache:mustache=-5"
    # chunks without classes and scales (an older caso demo): the scale still comes from the file name
    save_png(Image.new("RGB", (4, 4)), tmp_path / "001.mustache.5.png", {"caso:embeddings": "toy-mustache"})
    assert edit_group(tmp_path / "001.png", tmp_path / "001.mustache.5.png").label == "toy-mustache=5"


def test_plus_and_minus_edits_are_two_groups_with_their_own_success(both, clf_file: Path) -> None:
    import torch

    from caso_cli.config import EvalConfig
    from caso_cli.eval.evaluate import evaluate
    from caso_cli.models.classifier import load_classifier

    o, e, added, removed = both
    result = evaluate(pair_by_name(o, e), EvalConfig(oracle="toy", classifier=str(clf_file)))
    plus, minus = "mustache=5", "toy-mustache:mustache=-5"
    assert [r.group for r in result.pairs] == [plus] * N + [minus] * N
    assert result.summary()["groups"] == {plus: {"n": N, "from": "file name"}, minus: {"n": N, "from": "provenance"}}
    # the oracle: +5 should read a mustache on the a-faces, -5 none on the b-faces; mixed, the rate would be 0.5
    oracle = result.metrics["oracle"]
    assert oracle["groups"][plus] == {"n": N, "target": "mustache: yes", "success": 0.75,
                                      "changed": {"mustache": 0.75, "glasses": 0.0, "smile": 0.0, "hair": 0.0}}
    assert oracle["groups"][minus] == {"n": N, "target": "mustache: no", "success": 0.25,
                                       "changed": {"mustache": 0.25, "glasses": 0.0, "smile": 0.0, "hair": 0.0}}
    assert "success" not in oracle and oracle["changed"]["mustache"] == 0.5  # no one number for both edits
    # the classifier (an untrained one: its reading is recomputed here): +5 -> "mustache", -5 -> "no_mustache"
    clf = load_classifier(clf_file)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        pa, pr = clf(to_t(added)).argmax(1).numpy(), clf(to_t(removed)).argmax(1).numpy()
    groups = result.metrics["classifier"]["groups"]
    assert groups[plus]["target"] == "mustache" and groups[minus]["target"] == "no_mustache"
    assert groups[plus]["success"] == pytest.approx(float((pa == 1).mean()), abs=1e-4)
    assert groups[minus]["success"] == pytest.approx(float((pr == 0).mean()), abs=1e-4)
    assert "success" not in result.metrics["classifier"] and result.metrics["classifier"]["target"] is None
    # --target: the user's class for every group (success: edits in it), and over all pairs as before
    result = evaluate(pair_by_name(o, e), EvalConfig(classifier=str(clf_file), target="mustache"))
    c = result.metrics["classifier"]
    assert c["groups"][minus]["target"] == "mustache" and c["target_from"] == "--target"
    assert c["groups"][minus]["success"] == pytest.approx(float((pr == 1).mean()), abs=1e-4)
    assert c["success"] == pytest.approx(float(np.concatenate([pa, pr]).mean()), abs=1e-4)


def test_one_edit_gets_its_target_from_the_edits(both, clf_file: Path, capsys) -> None:
    """What caso demo suggests (--oracle toy --classifier, no --target) prints a success number."""
    o, e, _, _ = both
    for p in e.glob("a*"):
        p.unlink()
    code, out, err = run_main(["eval", str(o), str(e), "--oracle", "toy", "--classifier", str(clf_file), "--json"],
                              capsys)
    assert code == 0, err
    m = json.loads(out)["metrics"]
    assert m["oracle"]["target"] == "mustache: no" and m["oracle"]["success"] == 0.25
    assert m["classifier"]["target"] == "no_mustache" and m["classifier"]["target_from"] == "edits"
    assert m["classifier"]["success"] == m["classifier"]["groups"]["toy-mustache:mustache=-5"]["success"]
    code, out, err = run_main(["eval", str(o), str(e), "--oracle", "toy", "--classifier", str(clf_file)], capsys)
    assert code == 0 and "classifier.success" in out and "oracle.success" in out
    assert "oracle.groups.toy-mustache:mustache=-5.target" in out and "mustache: no" in out


def test_table_thresholds_and_report_per_group(both, tmp_path: Path, capsys) -> None:
    o, e, _, _ = both
    base = ["eval", str(o), str(e), "--oracle", "toy"]
    code, out, _ = run_main(base, capsys)
    assert code == 0 and "oracle.groups.mustache=5.success" in out and "0.75" in out
    assert "oracle.groups.toy-mustache:mustache=-5.success" in out and "0.25" in out
    code, _, err = run_main([*base, "--fail-under", "oracle.groups.mustache=5.success=0.7"], capsys)
    assert code == 0, err
    code, _, err = run_main([*base, "--fail-under", "oracle.groups.toy-mustache:mustache=-5.success=0.5"], capsys)
    assert code == 1 and "oracle.groups.toy-mustache:mustache=-5.success 0.25 < 0.5" in err
    report = tmp_path / "r.html"
    code, _, _ = run_main([*base, "--report", str(report)], capsys)
    page = report.read_text(encoding="utf-8")
    metrics = page.split("<h2>Metrics</h2>")[1].split("<h2>")[0]
    assert code == 0 and "{" not in metrics and "toy-mustache:mustache=-5" in metrics and "mustache: no" in metrics


@pytest.mark.slow
def test_the_eval_caso_demo_suggests_prints_its_success(tmp_path: Path, capsys) -> None:
    """caso demo's own follow-up command: per edit group, the oracle's success equals the demo's add/remove rates."""
    import re
    import shlex

    code, _, err = run_main(["demo", "-o", str(tmp_path / "demo"), "--learn-steps", "5", "--no-hold"], capsys)
    assert code == 0, err
    n_add, n_remove = map(int, re.search(r"add mustache \((\d+) faces\)  remove \((\d+) faces\)", err).groups())
    add_rate, remove_rate = map(int, re.search(r"alone, ±5 +(\d+)% +(\d+)%", err).groups())
    (line,) = [ln for ln in err.splitlines() if ln.startswith("measure the edits:")]
    args = shlex.split(line.split(":", 1)[1])
    assert args[:2] == ["caso", "eval"] and "--target" not in args
    code, out, err = run_main([*args[1:], "--json"], capsys)
    assert code == 0, err
    m = json.loads(out)["metrics"]
    add, remove = m["oracle"]["groups"]["toy-mustache:mustache=5"], m["oracle"]["groups"]["toy-mustache:mustache=-5"]
    assert (add["n"], remove["n"]) == (n_add, n_remove)
    assert (round(add["success"] * 100), round(remove["success"] * 100)) == (add_rate, remove_rate)
    clf = m["classifier"]["groups"]
    assert clf["toy-mustache:mustache=5"]["target"] == "mustache" and "success" in clf["toy-mustache:mustache=5"]
    assert clf["toy-mustache:mustache=-5"]["target"] == "no_mustache"
