"""The eval metrics on fixed inputs against numbers from the reference implementations.

References were computed once with scikit-image 0.26 / scipy 1.17 on exactly these inputs
(tests/eval_reference.py computes them): skimage.metrics.structural_similarity (gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1) and
peak_signal_noise_ratio; FID's formula with scipy.linalg.sqrtm; torch-fidelity's KID formula;
the Inception Score with scipy.stats.entropy.
"""

from __future__ import annotations

import numpy as np
import pytest

from caso_cli.eval import metrics as M
from tests.tiny import feats, full_rank_feats, pair


def test_ssim_matches_skimage() -> None:
    a, b = pair()
    assert M.ssim(a, b) == pytest.approx(0.29610922214873536, abs=1e-9)
    a, b = pair(32, 32)
    assert M.ssim(a, b) == pytest.approx(0.4485096406313392, abs=1e-9)


def test_ssim_identity_constant_and_errors() -> None:
    a, _ = pair()
    assert M.ssim(a, a) == pytest.approx(1.0)
    # flat images: only the luminance term is left, (2xy + C1) / (x^2 + y^2 + C1)
    c1 = (0.01 * 255) ** 2
    x, y = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8)
    assert M.ssim(x, y) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ValueError, match="one shape"):
        M.ssim(a, a[:-1])


def test_psnr_matches_skimage() -> None:
    from caso_cli.toyworld.quality import psnr as quality_psnr

    a, b = pair()
    assert M.psnr(a[None], b[None]) == pytest.approx(11.210252185140938, abs=1e-9)
    assert quality_psnr is M.psnr  # the toy world's quality measures use the library's PSNR
    assert M.psnr(a[None], a[None]) == pytest.approx(10 * np.log10(255.0**2 / 1e-10))  # MSE floored at 1e-10


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    assert M.feature_frechet_distance(full_rank_feats(12, 4, 0.0), full_rank_feats(15, 4, 1.0)) == pytest.approx(
        0.16465920630566977, abs=1e-9)
    # rank-2 covariances (as with fewer images than feature dimensions): still within 1e-7 of scipy
    assert M.feature_frechet_distance(feats(12, 4, 0.0), feats(15, 4, 1.0)) == pytest.approx(
        0.10723939739350019, abs=1e-7)


def test_frechet_distance_closed_forms() -> None:
    f = full_rank_feats(12, 4, 0.0)
    assert M.feature_frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 plus the squared mean difference
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5.0 + 1.0 + 1.0 + 0.0)


def test_kid_matches_torch_fidelity_formula() -> None:
    x, y = feats(10, 4, 0.0), feats(10, 4, 1.0)
    assert M.mmd2_polynomial(x, y) == pytest.approx(-0.329306471444347, abs=1e-9)
    assert M.kid(x, y, subset_size=1000) == (pytest.approx(-0.329306471444347, abs=1e-9), 0.0)
    mean, std = M.kid(feats(30, 4, 0.0), feats(30, 4, 0.0), subsets=20, subset_size=10)
    assert abs(mean) < 0.2 and std > 0  # same distribution: MMD^2 near 0, subsets vary


def test_inception_score_matches_scipy_entropy() -> None:
    p = np.exp(feats(8, 3, 0.5))
    p /= p.sum(axis=1, keepdims=True)
    assert M.inception_score(p)[0] == pytest.approx(1.061979018956958, abs=1e-9)
    assert M.inception_score(np.eye(4))[0] == pytest.approx(4.0)  # confident and uniform over 4 classes
    assert M.inception_score(np.full((5, 4), 0.25))[0] == pytest.approx(1.0)


def test_pca_2d_recovers_the_main_axis() -> None:
    t = np.linspace(-1, 1, 9)
    x = np.stack([3 * t, np.zeros_like(t), 0.1 * np.cos(7 * t)], axis=1) + np.array([5.0, 1.0, 0.0])
    xy, mean, axes = M.pca_2d(x)
    assert xy.shape == (9, 2) and mean == pytest.approx([5.0, 1.0, 0.1 * np.cos(7 * t).mean()])
    assert np.abs(axes[0]) == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)
    assert xy[:, 0] == pytest.approx(3 * t * np.sign(axes[0][0]))
