"""Distance to the true counterfactual: a preservation measure that no classifier guards.

The renderer draws a face from its parameters alone (:func:`caso_cli.toyworld.render.render`),
so the face an ideal edit should produce is known exactly: the same parameters with only the
edited attribute's label changed (:meth:`FaceParams.replace`), rendered again. Every nuisance
value (position, size, skin tone, background, eye shape) and every other label is the same
array as in the original, so the counterfactual differs from the original only in the pixels
the edited attribute draws.

:func:`counterfactual_scores` compares edits with these counterfactuals and gives two
references: the input itself ("do nothing") and, when given, the VAE reconstruction of the
counterfactual ("best possible": an edit comes out of the VAE decoder, so it cannot be closer
to the counterfactual than D(E(counterfactual)) on average).

PSNR is the **mean over images of the per-image PSNR** (dB, peak 255, per-image MSE over all
pixels and channels), as :func:`caso_cli.eval.metrics.psnr` computes it. That function floors
the MSE at 1e-10, so an image identical to its reference scores :data:`PSNR_IDENTICAL`
(about 148.1 dB) rather than inf and means stay finite; one such image in a batch still
dominates the mean, so score only faces whose class the edit changes (not faces already of the
target class, whose counterfactual is the input itself). SSIM is the mean over images of
:func:`caso_cli.eval.metrics.ssim` (Gaussian window, data range 255).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from caso_cli.errors import UsageError
from caso_cli.eval.metrics import psnr, ssim
from caso_cli.toyworld import render as R
from caso_cli.toyworld.captions import CLASSES

#: PSNR (dB) of an image against itself: metrics.psnr's MSE floor of 1e-10 at peak 255.
PSNR_IDENTICAL = 10 * math.log10(255.0**2 / 1e-10)


def counterfactual_params(params: R.FaceParams, attr: str, target: int) -> R.FaceParams:
    """``params`` with only the label ``attr`` set to class index ``target`` for every face.

    ``skin`` (light 0 / dark 1) mirrors the tone of faces on the other side of 0.5 (tone t becomes 1 - t, as far
    from the boundary as before); ``eyes`` sets the eye shape."""
    known = [a for a in CLASSES if a != "background"]  # the background's colour bins are no label to flip
    if attr not in known:
        raise UsageError(f"unknown toy attribute {attr!r}; known: {', '.join(known)}")
    classes = CLASSES[attr]
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < len(classes):
        raise UsageError(f"target of {attr!r} must be a class index 0..{len(classes) - 1} "
                         f"({', '.join(classes)}), got {target!r}")
    if attr == "skin":
        dark = params.skin_tone > R.DARK_SKIN
        return params.replace(skin_tone=np.where(dark == bool(target), params.skin_tone, 1 - params.skin_tone))
    if attr == "eyes":
        return params.replace(eye_shape=int(target))
    return params.replace(**{attr: int(target)})


def counterfactuals(params: R.FaceParams, attr: str, target: int) -> np.ndarray:
    """uint8 (N, 32, 32, 3) renders of the faces ``params`` with only ``attr`` set to class ``target``.

    Labels are class indices into :data:`caso_cli.toyworld.render.ATTRIBUTES` (binary: 0 no,
    1 yes; hair: 0 black, 1 blond, 2 red). Faces already of class ``target`` render exactly as
    ``render(params)`` does.
    """
    return R.render(counterfactual_params(params, attr, target))


def _check(name: str, x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (N, H, W, 3) images, got {x.dtype} {x.shape}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} has shape {x.shape}, the counterfactual {like.shape}")
    return x


def _mean_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([ssim(x, y, data_range=255.0) for x, y in zip(a, b, strict=True)]))


def counterfactual_scores(edits: np.ndarray, originals: np.ndarray, counterfactual: np.ndarray,
                          reconstruction: np.ndarray | None = None) -> dict[str, Any]:
    """Mean per-image PSNR (dB) and mean SSIM against the counterfactual, for uint8 (N, H, W, 3) batches.

    Keys: ``n``; ``edit_psnr``, ``edit_ssim`` (edits vs counterfactual); ``input_psnr``,
    ``input_ssim`` (originals vs counterfactual: the "do nothing" edit); with ``reconstruction``
    (the VAE reconstruction of the counterfactual, :func:`vae_reconstruction`) also
    ``vae_psnr``, ``vae_ssim`` (the "best possible" edit through this VAE). Higher is closer.
    Identical images score :data:`PSNR_IDENTICAL` dB and SSIM 1 (see the module docstring).
    """
    cf = _check("counterfactual", counterfactual)
    if len(cf) == 0:
        raise ValueError("no images to score")
    pairs = {"edit": _check("edits", edits, cf), "input": _check("originals", originals, cf)}
    if reconstruction is not None:
        pairs["vae"] = _check("reconstruction", reconstruction, cf)
    out: dict[str, Any] = {"n": len(cf)}
    for key, x in pairs.items():
        out[f"{key}_psnr"] = psnr(x, cf)
        out[f"{key}_ssim"] = _mean_ssim(x, cf)
    return out


def vae_reconstruction(sd: Any, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) D(E(images)): the model's VAE round trip (posterior mean, as caso encodes)."""
    from caso_cli.toyworld import sample as S  # the pipelines (torch): only needed here

    return S.decode(sd, S.encode(sd, np.asarray(images)))
