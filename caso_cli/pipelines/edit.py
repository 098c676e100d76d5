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
from caso_cli.pipelines.ddim import denoise, invert
from caso_cli.pipelines.guidance import Contrast

if TYPE_CHECKING:
    from caso_cli.models.loaders import StableDiffusion


@torch.no_grad()
def invert_latents(sd: StableDiffusion, z0: torch.Tensor, config: EditConfig) -> torch.Tensor:
    """DDIM-invert clean latents with the null condition up to the edit start (docs/method.md Eq. 6), each step refined
    ``config.inversion_refine`` times (fixed-point iteration)."""
    c_null = sd.family.null_condition()
    return invert(lambda z, t, _i: sd.eps(z, t, c_null), z0, sd.schedule, config.steps,
                  config.num_steps(sd.schedule), refine=config.inversion_refine)


@torch.no_grad()
def edit_latents(sd: StableDiffusion, z_t: torch.Tensor, guidance: Contrast, config: EditConfig) -> torch.Tensor:
    """Denoise inverted latents with ``guidance`` (docs/method.md Eq. 2 and 7; CFG on a condition is
    :func:`caso_cli.pipelines.guidance.cfg_guidance`); with ``config.single_step`` the null condition alone after
    the first step."""
    c_null = sd.family.null_condition() if config.single_step else None

    def eps(z: torch.Tensor, t: int, i: int) -> torch.Tensor:
        if c_null is not None and i > 0:  # single step: the null branch alone after the first
            return sd.eps(z, t, c_null)
        return guidance.eps(sd, z, t).to(z.dtype)

    return denoise(eps, z_t, sd.schedule, config.steps, config.num_steps(sd.schedule))
