"""The toy-world oracle reads attributes back from pixels: clean, blurred, noisy; and its CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from caso_cli.errors import InputError
from caso_cli.toyworld import oracle as O
from caso_cli.toyworld import render as R

FRESH_SEED = 20251125  # thresholds were set on seed 1234; this seed was not used to tune


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, R.FaceParams]:
    return R.render_faces(2000, seed=FRESH_SEED)


@pytest.mark.slow
def test_agreement_on_fresh_clean_renders(fresh) -> None:
    images, params = fresh
    readings = O.read_attributes(images)
    agree = O.agreement(readings, params, include_nuisance=True)
    for name in R.ATTRIBUTES:
        assert agree[name] >= 0.995, (name, agree[name])
    assert agree["all"] >= 0.99
    assert readings.face_found.all()
    # nuisance readings
    assert agree["cx_mae"] < 0.1 and agree["cy_mae"] < 0.1 and agree["face_w_mae"] < 0.1
    assert agree["skin_tone_mae"] < 0.01
    assert np.abs(readings.background - params.background).max() <= 1.0
    assert agree["eye_shape"] >= 0.99  # faces without glasses
    assert (readings.eye_shape[readings.glasses == 1] == O.UNKNOWN).all()


@pytest.mark.parametrize("blur, noise, shift", [(0.7, 8.0, 12.0), (0.8, 0.0, 0.0)])
@pytest.mark.slow
def test_agreement_under_blur_noise_and_colour_shift(fresh, blur: float, noise: float, shift: float) -> None:
    images, params = fresh
    degraded = O.degrade(images, seed=1, blur=blur, noise=noise, shift=shift)
    assert np.abs(degraded.astype(int) - images.astype(int)).mean() > 2.0  # really perturbed
    readings = O.read_attributes(degraded)
    agree = O.agreement(readings, params)
    for name in R.ATTRIBUTES:
        assert agree[name] >= 0.99, (name, agree[name], blur, noise, shift)
    assert readings.face_found.mean() >= 0.99


def test_thresholds_sit_inside_the_clean_class_gaps() -> None:
    images, params = R.render_faces(600, seed=1234)
    ranges = O.score_ranges(images, params)
    for name, (_, max0, min1, _) in ranges.items():
        thr = O.THRESHOLDS[name]
        assert max0 < thr < min1, (name, max0, thr, min1)
        if name != "eye_shape":
            assert min(thr - max0, min1 - thr) > 0.2, name  # wide margins for the four attributes


@pytest.mark.slow
def test_reads_pixels_not_labels_counterfactual_flips() -> None:
    params = R.sample_params(100, seed=31)
    for attr in ("mustache", "glasses", "smile"):
        for value in (0, 1):
            readings = O.read_attributes(R.render(params.replace(**{attr: value})))
            assert (getattr(readings, attr) == value).all(), (attr, value)
    for k in range(3):
        assert (O.read_attributes(R.render(params.replace(hair=k))).hair == k).all()


def test_not_a_face_is_flagged() -> None:
    rng = np.random.default_rng(0)
    blank = np.full((2, 32, 32, 3), 150, dtype=np.uint8)
    noise = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    readings = O.read_attributes(np.concatenate([blank, noise]))
    assert not readings.face_found.any()
    assert len(readings.to_dicts()) == 4
    assert len(O.read_attributes(np.zeros((0, 32, 32, 3), np.uint8))) == 0
    with pytest.raises(ValueError):
        O.read_attributes(np.zeros((2, 64, 64, 3), np.uint8))


# ---- the CLI -----------------------------------------------------------------------------------

def _cli():
    from caso_cli.toyworld.cli import app

    return app


def test_cli_render_then_oracle_json_matches_labels(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "toy"
    res = runner.invoke(_cli(), ["render", str(out), "--n", "12", "--seed", "5", "--p-glasses", "1"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    with (out / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and all(r["glasses"] == "yes" for r in rows)

    files = [str(out / rows[i]["path"]) for i in (0, 7)]
    res = runner.invoke(_cli(), ["oracle", *files, "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["path"] for d in lines] == files
    for d, i in zip(lines, (0, 7), strict=True):
        for name in ("mustache", "glasses", "smile", "hair"):
            assert d[name] == rows[i][name], (name, d, rows[i])
        assert d["face_found"] is True and d["eye_shape"] == "unknown"
        assert abs(d["face"]["cx"] - float(rows[i]["cx"])) < 0.2

    res = runner.invoke(_cli(), ["oracle", files[0]])
    assert res.exit_code == 0
    expected = (f"mustache={rows[0]['mustache']} glasses=yes smile={rows[0]['smile']} "
                f"hair={rows[0]['hair']}")
    assert expected in res.stdout and res.stdout.startswith(files[0])


def test_cli_oracle_sizes_and_refusals(tmp_path) -> None:
    from PIL import Image

    runner = CliRunner()
    images, params = R.render_faces(1, seed=9)
    big = tmp_path / "x4.png"  # a nearest-neighbour x4 preview reads like the original
    Image.fromarray(images[0].repeat(4, axis=0).repeat(4, axis=1)).save(big)
    res = runner.invoke(_cli(), ["oracle", str(big), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["hair"] == R.ATTRIBUTES["hair"][int(params.hair[0])]
    assert d["mustache"] == R.ATTRIBUTES["mustache"][int(params.mustache[0])]

    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((33, 33, 3), np.uint8)).save(odd)
    res = runner.invoke(_cli(), ["oracle", str(odd)])
    assert isinstance(res.exception, InputError) and "33x33" in str(res.exception)

    out = tmp_path / "toy"
    assert runner.invoke(_cli(), ["render", str(out), "--n", "3"]).exit_code == 0
    res = runner.invoke(_cli(), ["render", str(out), "--n", "3"])
    assert isinstance(res.exception, InputError)
    assert runner.invoke(_cli(), ["render", str(out), "--n", "4", "--overwrite"]).exit_code == 0
    assert len(list((out / "images").glob("*.png"))) == 4
    res = runner.invoke(_cli(), ["render", str(tmp_path / "p"), "--p-smile", "1.5"])
    assert res.exit_code == 2
