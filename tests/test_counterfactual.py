"""Counterfactual renders (only the target attribute changes) and the scores against them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from caso_cli.errors import UsageError
from caso_cli.eval.metrics import ssim
from caso_cli.toyworld import oracle
from caso_cli.toyworld import render as R
from caso_cli.toyworld.counterfactual import (
    PSNR_IDENTICAL,
    counterfactual_params,
    counterfactual_scores,
    counterfactuals,
    vae_reconstruction,
)

# Where each attribute draws, in face units (|u| <= U, V0 <= v <= V1; u = (x - cx) / a, v = (y - cy) / b),
# from the renderer's geometry: the mustache bar under the nose, the glasses' rings, bridge and arms
# at eye height, the mouth (neutral line or smile). A 1-pixel margin is added for the anti-aliased edges.
REGIONS = {"mustache": (0.50, 0.10, 0.35), "glasses": (1.0, -0.50, 0.10), "smile": (0.58, 0.30, 0.90)}


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, R.FaceParams]:
    return R.render_faces(64, seed=5)


def _region(p: R.FaceParams, attr: str, margin: float = 1.0) -> np.ndarray:
    """(N, 32, 32) bool: pixels whose centre lies within ``margin`` px of ``attr``'s drawing region."""
    umax, v0, v1 = REGIONS[attr]
    ys, xs = np.mgrid[0:R.IMAGE_SIZE, 0:R.IMAGE_SIZE].astype(np.float32) + 0.5
    a = p.face_w[:, None, None]
    b = p.face_h[:, None, None]
    dx, dy = xs[None] - p.cx[:, None, None], ys[None] - p.cy[:, None, None]
    return (np.abs(dx) <= umax * a + margin) & (dy >= v0 * b - margin) & (dy <= v1 * b + margin)


def test_only_the_label_changes_in_the_params(faces) -> None:
    _, p = faces
    for attr in R.ATTRIBUTES:
        cp = counterfactual_params(p, attr, 1)
        assert (getattr(cp, attr) == 1).all() and getattr(cp, attr).dtype == getattr(p, attr).dtype
        for f in dataclasses.fields(p):
            if f.name != attr:
                assert np.array_equal(getattr(cp, f.name), getattr(p, f.name)), f.name
    assert counterfactual_params(p, "hair", 2).hair.tolist() == [2] * len(p)


@pytest.mark.parametrize("attr", R.BINARY_ATTRIBUTES)
@pytest.mark.parametrize("target", [0, 1])
def test_counterfactual_changes_only_the_target_attribute(faces, attr: str, target: int) -> None:
    images, p = faces
    cf = counterfactuals(p, attr, target)
    assert cf.shape == images.shape and cf.dtype == np.uint8
    already = getattr(p, attr) == target
    assert 0 < already.sum() < len(p)
    # faces already of the target class: pixel-identical to the originals
    assert np.array_equal(cf[already], images[already])
    # the others: every changed pixel lies in the attribute's region, and some do change
    changed = (cf != images).any(axis=-1)
    assert not changed[~_region(p, attr)].any()
    assert changed[~already].sum(axis=(1, 2)).min() >= 10
    # the oracle reads the target on every counterfactual and every other attribute as labelled
    rd = oracle.read_attributes(cf)
    assert rd.face_found.all()
    assert (getattr(rd, attr) == target).all()
    for other in R.ATTRIBUTES:
        if other != attr:
            assert np.array_equal(getattr(rd, other), getattr(p, other)), other


def test_hair_counterfactual_and_bad_arguments(faces) -> None:
    images, p = faces
    cf = counterfactuals(p, "hair", 1)
    assert (oracle.read_attributes(cf).hair == 1).all()
    assert np.array_equal(cf[p.hair == 1], images[p.hair == 1])
    for attr, target in (("beard", 1), ("mustache", 2), ("hair", 3), ("smile", -1), ("glasses", True)):
        with pytest.raises(UsageError):
            counterfactuals(p, attr, target)


def test_identical_images_psnr_is_capped_and_ssim_is_one() -> None:
    from caso_cli.toyworld.quality import psnr

    x, _ = R.render_faces(4, seed=1)
    assert PSNR_IDENTICAL == pytest.approx(148.1308, abs=1e-3)
    assert psnr(x, x) == pytest.approx(PSNR_IDENTICAL)
    s = counterfactual_scores(x, x, x, reconstruction=x)
    assert s["n"] == 4
    for key in ("edit", "input", "vae"):
        assert s[f"{key}_psnr"] == pytest.approx(PSNR_IDENTICAL) and math.isfinite(s[f"{key}_psnr"])
        assert s[f"{key}_ssim"] == pytest.approx(1.0)


def test_scores_match_a_hand_computation() -> None:
    # flat images: per-image MSE is the squared offset; SSIM of flat images m, m + d is
    # (2 m (m + d) + c1) / (m^2 + (m + d)^2 + c1) with c1 = (0.01 * 255)^2 (no variance term)
    cf = np.stack([np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 0, np.uint8)])
    edits = cf + np.array([10, 1], np.uint8)[:, None, None, None]  # MSE 100 and 1
    originals = cf + np.uint8(5)  # MSE 25 in both
    c1 = (0.01 * 255) ** 2

    def flat_ssim(m: float, d: float) -> float:
        return (2 * m * (m + d) + c1) / (m * m + (m + d) ** 2 + c1)

    db = [10 * math.log10(255**2 / mse) for mse in (100, 1)]  # 28.13 and 48.13 dB
    s = counterfactual_scores(edits, originals, cf)
    assert set(s) == {"n", "edit_psnr", "edit_ssim", "input_psnr", "input_ssim"}
    assert s["edit_psnr"] == pytest.approx(np.mean(db))  # per-image mean (38.13), not the batch MSE's 31.11
    assert s["edit_psnr"] != pytest.approx(10 * math.log10(255**2 / 50.5))
    assert s["input_psnr"] == pytest.approx(10 * math.log10(255**2 / 25))
    assert s["edit_ssim"] == pytest.approx((flat_ssim(100, 10) + flat_ssim(0, 1)) / 2)
    assert s["input_ssim"] == pytest.approx((flat_ssim(100, 5) + flat_ssim(0, 5)) / 2)
    # textured images: the mean of metrics.ssim per image
    x, p = R.render_faces(3, seed=2)
    y = counterfactuals(p, "glasses", 1)
    s = counterfactual_scores(x, x, y, reconstruction=y)
    assert s["input_ssim"] == pytest.approx(np.mean([ssim(a, b) for a, b in zip(x, y, strict=True)]))
    assert s["vae_psnr"] == pytest.approx(PSNR_IDENTICAL)


def test_scores_reject_mismatched_inputs() -> None:
    x, _ = R.render_faces(2, seed=1)
    with pytest.raises(ValueError, match="shape"):
        counterfactual_scores(x[:1], x, x)
    with pytest.raises(ValueError, match="uint8"):
        counterfactual_scores(x.astype(np.float32), x, x)
    with pytest.raises(ValueError, match="no images"):
        counterfactual_scores(x[:0], x[:0], x[:0])


def test_vae_reconstruction_is_the_vae_round_trip(tiny_sd) -> None:
    import torch

    from caso_cli.toyworld import sample as S

    x, _ = R.render_faces(3, seed=4)
    rec = vae_reconstruction(tiny_sd, x)
    assert rec.shape == x.shape and rec.dtype == np.uint8
    with torch.no_grad():
        assert np.array_equal(rec, S.decode(tiny_sd, S.encode(tiny_sd, x)))


def test_rarely_named_attributes_have_counterfactuals_and_are_scored() -> None:
    """Skin: the tone mirrored across 0.5 on faces of the other class; eyes: the shape set. The oracle reads both
    (eye shape only without glasses, and an unreadable eye shape never counts as changed)."""
    from caso_cli.toyworld import measure, oracle
    from caso_cli.toyworld.counterfactual import counterfactual_params

    params = R.sample_params(64, 5).replace(glasses=0)
    dark = counterfactual_params(params, "skin", 1)
    light = params.skin_tone <= R.DARK_SKIN
    assert np.allclose(dark.skin_tone[light], 1 - params.skin_tone[light])
    assert np.array_equal(dark.skin_tone[~light], params.skin_tone[~light])
    assert np.array_equal(dark.mustache, params.mustache) and np.array_equal(dark.hair, params.hair)
    before, after = R.render(params), R.render(dark)
    s = measure.edit_scores(before[light], after[light], "skin", 1)
    assert s["success"] == 1.0 and s["kept"] == 1.0 and set(s["kept_each"]) == {"mustache", "glasses", "smile",
                                                                                  "hair", "eyes"}
    narrow = counterfactual_params(params, "eyes", 1)
    todo = params.eye_shape == 0
    s = measure.edit_scores(before[todo], R.render(narrow)[todo], "eyes", 1)
    assert s["success"] == 1.0 and s["kept"] == 1.0
    # glasses added hide the eyes: eye shape is then unknown, not changed
    specs = R.render(params.replace(glasses=1))
    assert (oracle.read_attributes(specs).eyes == oracle.UNKNOWN).all()
    s = measure.edit_scores(before, specs, "glasses", 1)
    assert s["success"] == 1.0 and s["kept"] == 1.0
