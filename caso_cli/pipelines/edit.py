"""Edit real images with learned conditions (docs/method.md §4): one inversion, any number of edits.

The inversion depends only on the image, the model, the size and the steps, so
:func:`invert_latents` runs once per image and :func:`edit_latents` reuses it for every
attribute, scale and combination. Inverting to the start timestep and denoising from there
with guidance equals a full inversion whose denoising uses the null condition before the
start (their null steps mirror each other), at a fraction of the cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from caso_cli.config import EditConfig
from caso_cli.families import Condition
from caso_cli.pipelines.ddim import denoise, invert
from caso_cli.pipelines.guidance import Contrast, composed_eps, guided_eps, predict_eps

if TYPE_CHECKING:
    from caso_cli.models.loaders import StableDiffusion


@torch.no_grad()
def invert_latents(sd: StableDiffusion, z0: torch.Tensor, config: EditConfig) -> torch.Tensor:
    """DDIM-invert clean latents with the null condition up to the edit start (docs/method.md Eq. 6), each step refined
    ``config.inversion_refine`` times (fixed-point iteration)."""
    c_null = sd.family.null_condition()
    return invert(lambda z, t, _i: predict_eps(sd, z, t, c_null), z0, sd.schedule, config.steps,
                  config.num_steps(sd.schedule), refine=config.inversion_refine)


@torch.no_grad()
def edit_latents(sd: StableDiffusion, z_t: torch.Tensor, cond: Condition | list[Condition] | Contrast,
                 scale: float | torch.Tensor | list[float], config: EditConfig) -> torch.Tensor:
    """Denoise inverted latents with CFG on ``cond`` (docs/method.md Eq. 2 and 7); null after the first step if
    single-step.

    ``cond`` has one row or one row per latent; ``scale`` a float or a (B,) tensor (one scale per latent).
    Lists of conditions and scales compose one guidance term per condition; a :class:`Contrast` carries its own
    scales (``scale`` is then ignored).
    """
    c_null = sd.family.null_condition()
    if isinstance(cond, Contrast):
        contrast = cond

        def guided(z: torch.Tensor, t: int) -> torch.Tensor:
            return contrast.eps(sd, z, t)
    elif isinstance(cond, list):
        conds, scales = cond, [float(w) for w in scale]  # type: ignore[union-attr]

        def guided(z: torch.Tensor, t: int) -> torch.Tensor:
            return composed_eps(sd, z, t, c_null, conds, scales)
    else:
        w = scale.view(-1, 1, 1, 1).to(z_t.device, torch.float32) if isinstance(scale, torch.Tensor) else float(scale)
        single = cond  # one row, or one per latent: guided_eps expands it

        def guided(z: torch.Tensor, t: int) -> torch.Tensor:
            return guided_eps(sd, z, t, c_null, single, w)

    unguided = isinstance(cond, Condition) and not isinstance(scale, torch.Tensor) and float(scale) == 0.0

    def eps(z: torch.Tensor, t: int, i: int) -> torch.Tensor:
        if unguided or (config.single_step and i > 0):  # scale 0: the null branch alone, one UNet call
            return predict_eps(sd, z, t, c_null)
        return guided(z, t).to(z.dtype)

    return denoise(eps, z_t, sd.schedule, config.steps, config.num_steps(sd.schedule))
