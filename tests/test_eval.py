"""``caso eval``: pairing rules, metrics on toy counterfactual pairs, JSON shape, report, --fail-under."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caso_cli.errors import InputError
from caso_cli.eval import metrics as M
from caso_cli.eval.pairing import pair_by_name, pair_from_csv
from caso_cli.toyworld import render as R
from tests.tiny import run_main

N = 8
ADDED = np.array([1, 1, 1, 1, 1, 1, 0, 0])  # edits 0-5 gain a mustache, 6-7 are unchanged copies


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (16, 16)).save(folder / n)


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Counterfactual toy faces: originals without a mustache; edits identical but for the mustache."""
    params = R.sample_params(N, seed=3, config=R.RenderConfig(p_mustache=0.0))
    orig, edit = R.render(params), R.render(params.replace(mustache=ADDED))
    (tmp_path / "orig").mkdir()
    (tmp_path / "edit").mkdir()
    for i in range(N):
        Image.fromarray(orig[i]).save(tmp_path / "orig" / f"{i:03d}.png")
        Image.fromarray(edit[i]).save(tmp_path / "edit" / f"{i:03d}.mustache.{5 if ADDED[i] else 0}.png")
    return tmp_path / "orig", tmp_path / "edit", orig, edit


# ---- pairing ---------------------------------------------------------------------------------


def test_pairing_by_name_prefix_up_to_a_dot(tmp_path: Path) -> None:
    touch(tmp_path / "o", "000.png", "001.jpg", "001.b.png", "002.png")
    touch(tmp_path / "e", "000.mustache.5.png", "000.smile.-2.5.png", "001.b.recon.png", "001.x.png",
          "0001.png", "zzz.png")
    p = pair_by_name(tmp_path / "o", tmp_path / "e")
    got = {(o.name, e.name) for o, e in p.pairs}
    assert got == {("000.png", "000.mustache.5.png"), ("000.png", "000.smile.-2.5.png"),
                   ("001.b.png", "001.b.recon.png"),  # the longest matching stem wins
                   ("001.jpg", "001.x.png")}
    assert [e.name for e in p.unpaired_edits] == ["0001.png", "zzz.png"]  # 0001 is not 000 + a dot
    assert [o.name for o in p.unpaired_originals] == ["002.png"]


def test_pairing_same_folder_and_single_files(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "a.smile.5.png")
    p = pair_by_name(tmp_path, tmp_path)
    assert [(o.name, e.name) for o, e in p.pairs] == [("a.png", "a.smile.5.png")]
    assert pair_by_name(tmp_path / "a.png", tmp_path / "a.smile.5.png").pairs == [
        (tmp_path / "a.png", tmp_path / "a.smile.5.png")]


def test_nothing_pairs_is_one_line_error(tmp_path: Path, capsys) -> None:
    touch(tmp_path / "o", "a.png")
    touch(tmp_path / "e", "b.png")
    with pytest.raises(InputError, match="no edit in .* pairs with an original"):
        pair_by_name(tmp_path / "o", tmp_path / "e")
    code, out, err = run_main(["eval", str(tmp_path / "o"), str(tmp_path / "e")], capsys)
    assert code == 3 and out == "" and err.count("\n") == 1 and err.startswith("Error: no edit in")


def test_pairs_csv(tmp_path: Path) -> None:
    touch(tmp_path / "o", "x.png")
    touch(tmp_path / "e", "totally-different.png")
    csv = tmp_path / "pairs.csv"
    csv.write_text("orig,edit\nx.png,totally-different.png\n")
    p = pair_from_csv(csv, tmp_path / "o", tmp_path / "e")
    assert p.pairs == [(tmp_path / "o" / "x.png", tmp_path / "e" / "totally-different.png")]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="needs columns 'orig' and 'edit'"):
        pair_from_csv(tmp_path / "bad.csv", tmp_path / "o", tmp_path / "e")


# ---- metrics through the pipeline ----------------------------------------------------------------


def test_eval_on_toy_counterfactuals(toy, clf_file: Path) -> None:
    import torch

    from caso_cli.config import EvalConfig
    from caso_cli.eval.evaluate import evaluate
    from caso_cli.models.classifier import load_classifier

    o_dir, e_dir, orig, edit = toy
    result = evaluate(pair_by_name(o_dir, e_dir), EvalConfig(classifier=str(clf_file), target="mustache",
                                                             oracle="toy", batch_size=3))
    m = result.metrics
    # the oracle reads exactly the mustaches that were drawn, nothing else changes
    assert m["oracle"]["changed"] == {"mustache": 0.75, "glasses": 0.0, "smile": 0.0, "hair": 0.0}
    assert m["oracle"]["edit_classes"]["mustache"] == {"no": 0.25, "yes": 0.75}
    # PSNR / SSIM per pair are metrics.psnr and metrics.ssim of that pair
    for i, r in enumerate(result.pairs):
        assert r.psnr == pytest.approx(M.psnr(orig[i:i + 1], edit[i:i + 1]))
        assert r.ssim == pytest.approx(M.ssim(orig[i], edit[i]))
        assert not r.fitted
    assert result.pairs[7].ssim == pytest.approx(1.0) and result.pairs[0].ssim < 0.99
    assert m["psnr"]["mean"] == pytest.approx(np.mean([r.psnr for r in result.pairs]), abs=1e-4)
    # classifier success: recomputed here from the classifier itself
    clf = load_classifier(clf_file)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        pe, po = clf(to_t(edit)).argmax(1).numpy(), clf(to_t(orig)).argmax(1).numpy()
        fe, fo = clf.features(to_t(edit)).numpy(), clf.features(to_t(orig)).numpy()
    assert m["classifier"]["success"] == pytest.approx(float((pe == 1).mean()), abs=1e-4)
    assert m["classifier"]["originals_rate"] == pytest.approx(float((po == 1).mean()), abs=1e-4)
    assert m["classifier_fd"]["value"] == pytest.approx(M.feature_frechet_distance(fo, fe), abs=1e-5)
    assert "not comparable with FID" in m["classifier_fd"]["features"]
    assert m["classifier_kid"]["mean"] == pytest.approx(M.mmd2_polynomial(fo, fe), abs=1e-5)
    for name in ("lpips", "fid", "kid", "inception_score"):
        assert m[name] == {"available": False, "reason": m[name]["reason"]}
        assert "never downloads" in m[name]["reason"]


def test_original_of_another_size_is_fitted(tmp_path: Path) -> None:
    from caso_cli.config import EvalConfig
    from caso_cli.eval.evaluate import evaluate

    grad = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))
    (tmp_path / "o").mkdir()
    (tmp_path / "e").mkdir()
    Image.fromarray(grad).save(tmp_path / "o" / "g.png")
    Image.fromarray(grad).resize((16, 16), Image.Resampling.LANCZOS).save(tmp_path / "e" / "g.x.png")
    r = evaluate(pair_by_name(tmp_path / "o", tmp_path / "e"), EvalConfig()).pairs[0]
    assert r.fitted and r.psnr > 40 and r.ssim > 0.99


# ---- the command ---------------------------------------------------------------------------------


def test_cli_json_shape(toy, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    code, out, _ = run_main(["eval", str(o_dir), str(e_dir), "--oracle", "toy", "--json"], capsys)
    assert code == 0 and out.count("\n") == 1
    s = json.loads(out)
    assert s["schema_version"] == 1 and s["n_pairs"] == N
    assert set(s["metrics"]) == {"psnr", "ssim", "classifier", "classifier_fd", "classifier_kid", "oracle",
                                 "lpips", "fid", "kid", "inception_score"}
    assert s["metrics"]["classifier"] == {"available": False, "reason": "no --classifier given"}
    assert set(s["metrics"]["psnr"]) == {"available", "mean", "median", "min", "max"}
    row = s["pairs"][0]
    assert row["orig"].endswith("000.png") and row["edit"].endswith("000.mustache.5.png")
    assert row["oracle_orig"]["mustache"] == "no" and row["oracle_edit"]["mustache"] == "yes"
    assert s["unpaired"] == {"originals": [], "edits": []}


def test_cli_table_default(toy, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    code, out, _ = run_main(["eval", str(o_dir), str(e_dir), "--oracle", "toy"], capsys)
    assert code == 0 and "oracle.changed.mustache" in out and "0.75" in out and "unavailable" in out


def test_report_is_self_contained(toy, clf_file: Path, tmp_path: Path, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    report = tmp_path / "out" / "report.html"
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--oracle", "toy", "--classifier", str(clf_file),
                             "--target", "mustache", "--report", str(report)], capsys)
    assert code == 0 and "report written" in err
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(srcs) == 2 * N and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert page.count("<svg") == 3  # PSNR and SSIM histograms, the PCA plot
    pca = re.findall(r"<svg.*?</svg>", page, flags=re.S)[2]
    assert pca.count("<circle") == 2 * N + 2  # every original and edit, and the legend's two dots
    assert "mean: mustache" in pca or "mean: no_mustache" in pca
    assert "mustache: no → yes" in page and page.count("<tr>") >= N + 1
    # thumbnails decode and are enlarged 32 -> 96 px
    import base64
    import io

    thumb = Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1])))
    assert thumb.size == (96, 96)


def test_fail_under(toy, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    base = ["eval", str(o_dir), str(e_dir), "--oracle", "toy"]
    code, _, err = run_main([*base, "--fail-under", "psnr=10", "--fail-under", "oracle.changed.mustache=0.5"],
                            capsys)
    assert code == 0, err
    code, _, err = run_main([*base, "--fail-under", "ssim=0.999", "--fail-under", "psnr=10"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("Error: --fail-under missed: ssim ")
    code, _, err = run_main([*base, "--fail-over", "lpips.mean=0.5"], capsys)
    assert code == 1 and "--fail-over missed: lpips.mean unavailable (needs backbone weights" in err
    # a metric's better direction decides the option: LPIPS below 0.2 is good, not a failure
    code, out, err = run_main([*base, "--fail-under", "lpips=0.2"], capsys)
    assert code == 2 and out == "" and err.strip() == ("Error: --fail-under lpips=0.2: lower lpips is better, so a "
                                                       "threshold on it is --fail-over lpips=0.2")
    code, _, err = run_main([*base, "--fail-over", "psnr=50"], capsys)
    assert code == 2 and "higher psnr is better, so a threshold on it is --fail-under psnr=50" in err
    code, out, err = run_main([*base, "--fail-under", "nonsense=1"], capsys)
    assert code == 2 and out == "" and err.strip().splitlines() == [  # refused before any image is read
        "Error: --fail-under: unknown metric 'nonsense' (metrics: psnr, ssim, classifier, classifier_fd, "
        "classifier_kid, oracle, lpips, fid, kid, inception_score)"]
    code, _, err = run_main([*base, "--fail-under", "psnr"], capsys)
    assert code == 2 and "METRIC=NUMBER" in err


def test_fail_over_compares_from_above() -> None:
    from caso_cli.eval.evaluate import missed_thresholds

    metrics = {"lpips": {"available": True, "mean": 0.3}, "fid": {"available": False, "reason": "no weights"}}
    assert missed_thresholds(metrics, [("lpips", 0.5)], over=True) == []
    assert missed_thresholds(metrics, [("lpips", 0.2), ("fid", 10.0)], over=True) == [
        "lpips 0.3 > 0.2", "fid unavailable (no weights)"]
    assert missed_thresholds(metrics, [("lpips", 0.5)]) == ["lpips 0.3 < 0.5"]  # the library compares as told


def test_weights_never_downloaded(toy, tmp_path: Path, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--weights", str(tmp_path / "none")], capsys)
    assert code == 2 and "--weights" in err and "no such file" in err
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--weights", "nobody/not-in-the-cache"], capsys)
    assert code == 3 and err.count("\n") == 1 and "not a hub repository in the local cache" in err
    (tmp_path / "w").mkdir()
    code, out, _ = run_main(["eval", str(o_dir), str(e_dir), "--weights", str(tmp_path / "w"), "--json"], capsys)
    m = json.loads(out)["metrics"]
    assert code == 0 and m["fid"]["available"] is False and "pt_inception-2015-12-05" in m["fid"]["reason"]
    assert "VGG16" in m["lpips"]["reason"] and "LPIPS v0.1 heads" in m["lpips"]["reason"]


@pytest.mark.slow
def test_backbone_metrics_from_weight_files(toy, tmp_path: Path, capsys) -> None:
    """LPIPS per pair, FID/KID between the sets and IS of the edits, each recomputed here from the networks."""
    import torch

    from caso_cli.eval.backbones import load_backbones
    from tests.backbone_weights import write_weight_files

    o_dir, e_dir, orig, edit = toy
    w = write_weight_files(tmp_path)
    report = tmp_path / "r.html"
    code, out, err = run_main(["eval", str(o_dir), str(e_dir), "--weights", str(w), "--json", "--report",
                               str(report), "--fail-over", "lpips=10"], capsys)
    assert code == 0, err
    s = json.loads(out)
    m = s["metrics"]
    nets = load_backbones([str(w)])
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        lp = nets.lpips(to_t(orig), to_t(edit)).numpy()
        (po, _), (pe, le) = nets.inception(to_t(orig)), nets.inception(to_t(edit))
    assert [p["lpips"] for p in s["pairs"]] == pytest.approx(lp.round(4).tolist(), abs=1e-4)
    added = ADDED.astype(bool)
    assert lp[~added].max() == 0 and lp[added].min() > 0  # unchanged faces are at distance 0
    assert m["lpips"]["mean"] == pytest.approx(lp.mean(), abs=1e-4) and "vgg.pth" in m["lpips"]["weights"]
    assert m["fid"]["value"] == pytest.approx(M.feature_frechet_distance(po.double().numpy(), pe.double().numpy()),
                                              rel=1e-4)
    assert "far too few" in m["fid"]["note"]
    kid_mean, _ = M.kid(po.double().numpy(), pe.double().numpy())
    assert m["kid"]["mean"] == pytest.approx(kid_mean, abs=1e-6)
    is_mean, _ = M.inception_score(torch.softmax(le.double(), 1).numpy(), splits=N)
    assert m["inception_score"]["mean"] == pytest.approx(is_mean, abs=1e-4) and m["inception_score"]["of"] == "edits"
    assert "<th>LPIPS</th>" in report.read_text() and "LPIPS (max bar" in report.read_text()
    for side in ("o", "e"):
        (tmp_path / side).mkdir()
        Image.new("RGB", (12, 12)).save(tmp_path / side / "a.png")
    code, out, err = run_main(["eval", str(tmp_path / "o"), str(tmp_path / "e"), "--weights", str(w)], capsys)
    assert code == 3 and err.count("\n") == 1 and "LPIPS needs images of at least 16x16 pixels, got 12x12" in err


def test_option_errors(toy, clf_file: Path, capsys) -> None:
    o_dir, e_dir, _, _ = toy
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--target", "mustache"], capsys)
    assert code == 2 and "--target needs --classifier" in err
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--classifier", str(clf_file), "--target", "hat"],
                            capsys)
    assert code == 2 and "not a class" in err and "no_mustache, mustache" in err
    code, _, err = run_main(["eval", str(o_dir), str(e_dir), "--oracle", "celeba"], capsys)
    assert code == 2 and "unknown --oracle" in err
