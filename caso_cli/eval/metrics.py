"""Image-set metrics as small numpy functions (no torch, no weights): PSNR, SSIM, Fréchet distance, KID, IS, PCA.

Each follows a reference implementation's conventions, named in its docstring, and is tested
against numbers computed by that reference on fixed inputs (tests/test_eval_metrics.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SSIM_SIGMA = 1.5  # Gaussian window (Wang et al. 2004)
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): scipy.ndimage.gaussian_filter's default truncation
SSIM_K = (0.01, 0.03)


def _gaussian_kernel(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable correlation of (H, W, C) with ``k`` along H and W, keeping only full windows."""
    r = len(k)
    h, w = x.shape[:2]
    y = sum(k[i] * x[i:h - r + 1 + i] for i in range(r))
    return sum(k[i] * y[:, i:w - r + 1 + i] for i in range(r))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR (dB) between uint8 image batches (N, ...): 10 log10(255^2 / MSE) per image.

    The MSE is floored at 1e-10, so identical images read 148.1 dB rather than infinity.
    """
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = np.maximum(d.reshape(len(a), -1).mean(axis=1), 1e-10)
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two (H, W, 3) images with an 11x11 Gaussian window (sigma 1.5), Wang et al. 2004.

    Equals ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)``: the mean over channels and
    over the pixels whose window lies inside the image.
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"ssim needs two (H, W, C) images of one shape, got {x.shape} and {y.shape}")
    k = _gaussian_kernel()
    if min(x.shape[:2]) < len(k):
        raise ValueError(f"ssim needs images of at least {len(k)}x{len(k)} pixels, got {x.shape[1]}x{x.shape[0]}")
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    mx, my = _filter_valid(x, k), _filter_valid(y, k)
    vx = _filter_valid(x * x, k) - mx * mx
    vy = _filter_valid(y * y, k) - my * my
    cxy = _filter_valid(x * y, k) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (ddof 1) of (N, D) features, as pytorch-fid fits them."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, FID's formula).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2),
    which has the eigenvalues of S1 S2 and is symmetric, so no complex square root is needed.
    """
    root = _psd_sqrt(np.asarray(s1, np.float64))
    m = root @ np.asarray(s2, np.float64) @ root
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def feature_frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (N, D) feature sets."""
    return frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))


def mmd2_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / D + 1)^3 (Binkowski et al. 2018, KID)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: mean and std of :func:`mmd2_polynomial` over random subsets (torch-fidelity's scheme).

    ``subset_size`` is capped at the smaller set; when it covers both sets whole, one subset is used.
    """
    size = min(subset_size, len(x), len(y))
    if size == len(x) == len(y):
        return mmd2_polynomial(x, y), 0.0
    rng = np.random.default_rng(seed)
    vals = [mmd2_polynomial(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over ``splits`` equal chunks: mean and std (Salimans et al. 2016)."""
    p = np.asarray(probs, np.float64)
    scores = []
    for chunk in np.array_split(p, splits):
        marginal = chunk.mean(axis=0, keepdims=True)
        kl = (chunk * (np.log(np.clip(chunk, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project (N, D) points on their first two principal axes: (N, 2) coordinates, the mean, the (2, D) axes.

    Each axis's sign is fixed so that its largest-magnitude coefficient is positive (stable output).
    """
    f = np.asarray(x, np.float64)
    mean = f.mean(axis=0)
    _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
    axes = np.zeros((2, f.shape[1]))
    axes[:min(2, len(vt))] = vt[:2]
    for row in axes:
        if row.any() and row[np.abs(row).argmax()] < 0:
            row *= -1
    return (f - mean) @ axes.T, mean, axes


def summary(values: list[float]) -> dict[str, Any]:
    """A metric's entry of ``caso eval``: mean, median, min and max of its values, rounded."""
    a = np.asarray(values, np.float64)
    return {"available": True, "mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}


def unavailable(reason: str) -> dict[str, Any]:
    """The entry of a metric that could not be computed, and why."""
    return {"available": False, "reason": reason}
