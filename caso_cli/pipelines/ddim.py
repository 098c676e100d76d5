"""Deterministic DDIM inversion and denoising loops (docs/method.md §4).

Both loops take ``model_eps(z, t, i) -> eps``: the noise prediction at timestep ``t``
for step ``i`` of the loop (the caller decides the condition and the guidance per step,
e.g. null before the edit start, guided after). ``num_steps`` of a grid of ``steps``
steps are run: the last ``num_steps`` timesteps of the grid, so a partial inversion
to a start timestep and the matching denoising use the same timesteps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from caso_cli.diffusion import ddim_invert_step, ddim_step

if TYPE_CHECKING:
    import torch

    from caso_cli.diffusion import NoiseSchedule

EpsFn = Callable[["torch.Tensor", int, int], "torch.Tensor"]
StepCallback = Callable[[int, int], None]


def _check(steps: int, num_steps: int | None) -> int:
    n = steps if num_steps is None else num_steps
    if not 0 <= n <= steps:
        raise ValueError(f"num_steps must be in 0..{steps}, got {n}")
    return n


def invert(model_eps: EpsFn, z0: torch.Tensor, schedule: NoiseSchedule, steps: int, num_steps: int | None = None,
           callback: StepCallback | None = None, refine: int = 0) -> torch.Tensor:
    """Invert a clean latent up the DDIM grid for ``num_steps`` steps (docs/method.md Eq. 6).

    Each step goes from t_prev = t - T/steps to t with eps evaluated at (z_prev, t), the
    usual approximation eps(z_prev, t) ~ eps(z_t, t). ``refine`` > 0 then re-evaluates eps
    at the current estimate of z_t that many times (a fixed-point iteration,
    z_t <- invert_step(z_prev, eps(z_t, t))), so that the denoising step from z_t, which
    uses eps(z_t, t), lands back on z_prev: each refinement costs one more model call per step.
    """
    n = _check(steps, num_steps)
    grid = schedule.grid(steps)
    z = z0
    for i, t in enumerate(reversed(grid[steps - n:])):
        level_prev, level_t = schedule.level(schedule.prev(t, steps)), schedule.level(t)
        z_t = ddim_invert_step(z, model_eps(z, t, i), level_prev, level_t)
        for _ in range(refine):
            z_t = ddim_invert_step(z, model_eps(z_t, t, i), level_prev, level_t)
        z = z_t
        if callback:
            callback(i, n)
    return z


def denoise(model_eps: EpsFn, z: torch.Tensor, schedule: NoiseSchedule, steps: int, num_steps: int | None = None,
            callback: StepCallback | None = None) -> torch.Tensor:
    """Denoise down the last ``num_steps`` timesteps of the DDIM grid to a clean latent (docs/method.md Eq. 7)."""
    n = _check(steps, num_steps)
    grid = schedule.grid(steps)
    for i, t in enumerate(grid[steps - n:]):
        eps = model_eps(z, t, i)
        z = ddim_step(z, eps, schedule.level(t), schedule.level(schedule.prev(t, steps)))
        if callback:
            callback(i, n)
    return z
