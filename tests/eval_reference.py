"""Reference numbers of tests/test_eval_metrics.py, from the reference packages (not run by pytest).

Needs scikit-image and scipy (not caso dependencies): ``python tests/eval_reference.py``.
Last run: scikit-image 0.26.0, scipy 1.17.1, numpy 2.4.6.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.tiny import feats, full_rank_feats, pair


def ssim_ref(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255, channel_axis=-1))


def fid_ref(f1: np.ndarray, f2: np.ndarray) -> float:
    """pytorch-fid's formula with scipy's sqrtm."""
    m1, s1, m2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid_ref(f1: np.ndarray, f2: np.ndarray) -> float:
    """torch-fidelity's mmd2 with the polynomial kernel (degree 3, gamma 1/d, coef 1), equal set sizes."""
    d, m = f1.shape[1], len(f1)
    kxx, kyy, kxy = ((f1 @ f1.T / d + 1) ** 3, (f2 @ f2.T / d + 1) ** 3, (f1 @ f2.T / d + 1) ** 3)
    a = (kxx.sum() - np.diag(kxx).sum()) + (kyy.sum() - np.diag(kyy).sum())
    return float(a / (m * (m - 1)) - 2 * kxy.sum() / m**2)


def is_ref(p: np.ndarray) -> float:
    py = p.mean(0)
    return float(np.exp(np.mean([scipy.stats.entropy(row, py) for row in p])))


if __name__ == "__main__":
    a, b = pair()
    print("ssim 24x20", repr(ssim_ref(a, b)))
    print("ssim 32x32", repr(ssim_ref(*pair(32, 32))))
    print("psnr", repr(float(peak_signal_noise_ratio(a, b, data_range=255))))
    print("fd full rank", repr(fid_ref(full_rank_feats(12, 4, 0.0), full_rank_feats(15, 4, 1.0))))
    print("fd rank 2", repr(fid_ref(feats(12, 4, 0.0), feats(15, 4, 1.0))))
    print("kid", repr(kid_ref(feats(10, 4, 0.0), feats(10, 4, 1.0))))
    p = np.exp(feats(8, 3, 0.5))
    print("is", repr(is_ref(p / p.sum(axis=1, keepdims=True))))
