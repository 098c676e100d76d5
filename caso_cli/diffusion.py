"""The diffusion math of docs/method.md as small pure functions on tensors.

``abar`` is the cumulative product of alphas at a timestep (a float or a tensor that
broadcasts against the latents). Nothing here touches a model or a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

def _sqrt(a: Any) -> Any:
    return a**0.5


def add_noise(z0: torch.Tensor, noise: torch.Tensor, abar_t: Any) -> torch.Tensor:
    """Forward noising to t: z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) n (docs/method.md Eq. 8)."""
    return _sqrt(abar_t) * z0 + _sqrt(1 - abar_t) * noise


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, abar_t: Any) -> torch.Tensor:
    """Clean estimate: zhat0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (docs/method.md Eq. 9)."""
    return (z_t - _sqrt(1 - abar_t) * eps) / _sqrt(abar_t)


def v_to_eps(v: torch.Tensor, z_t: torch.Tensor, abar_t: Any) -> torch.Tensor:
    """v-prediction to noise: eps = sqrt(abar_t) v + sqrt(1 - abar_t) z_t (docs/method.md §2)."""
    return _sqrt(abar_t) * v + _sqrt(1 - abar_t) * z_t


def to_eps(model_output: torch.Tensor, z_t: torch.Tensor, abar_t: Any, prediction_type: str) -> torch.Tensor:
    """The model's output as a noise prediction, for ``epsilon`` or ``v_prediction`` models (docs/method.md §2)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return v_to_eps(model_output, z_t, abar_t)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def cfg(eps_null: torch.Tensor, eps_cond: torch.Tensor, scale: Any) -> torch.Tensor:
    """Classifier-free guidance: eps_w = eps_null + w (eps_cond - eps_null) (docs/method.md Eq. 2)."""
    return eps_null + scale * (eps_cond - eps_null)


def _ddim_move(z: torch.Tensor, eps: torch.Tensor, abar_from: Any, abar_to: Any) -> torch.Tensor:
    return _sqrt(abar_to) * predict_x0(z, eps, abar_from) + _sqrt(1 - abar_to) * eps


def ddim_step(z_t: torch.Tensor, eps: torch.Tensor, abar_t: Any, abar_prev: Any) -> torch.Tensor:
    """Deterministic DDIM denoising t -> t_prev: sqrt(abar_prev) zhat0 + sqrt(1 - abar_prev) eps
    (docs/method.md Eq. 7)."""
    return _ddim_move(z_t, eps, abar_t, abar_prev)


def ddim_invert_step(z_prev: torch.Tensor, eps: torch.Tensor, abar_prev: Any, abar_next: Any) -> torch.Tensor:
    """DDIM inversion t_prev -> t: sqrt(abar_t) zhat0(z_prev) + sqrt(1 - abar_t) eps (docs/method.md Eq. 6)."""
    return _ddim_move(z_prev, eps, abar_prev, abar_next)


def timestep_grid(num_train_timesteps: int, steps: int, spacing: str = "leading", offset: int = 0) -> list[int]:
    """The descending DDIM timestep grid, as diffusers' ``DDIMScheduler.set_timesteps`` builds it
    (docs/method.md §4)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "leading":
        ratio = num_train_timesteps // steps
        return [i * ratio + offset for i in range(steps - 1, -1, -1)]
    if spacing == "trailing":
        ratio = num_train_timesteps / steps
        return [int(round(num_train_timesteps - i * ratio)) - 1 for i in range(steps)]
    if spacing == "linspace":
        if steps == 1:
            return [0]
        last = num_train_timesteps - 1
        return [int(round(last * i / (steps - 1))) for i in range(steps - 1, -1, -1)]
    raise ValueError(f"unsupported timestep spacing {spacing!r}")


@dataclass(frozen=True)
class Schedule:
    """The noise schedule of a model plus the DDIM grid for a number of steps."""

    alphas_cumprod: tuple[float, ...]  # abar_t for t = 0..T-1 (float64 precision kept as Python floats)
    final_abar: float  # abar used "before" t = 0 (1.0 when set_alpha_to_one, else abar_0)
    prediction_type: str  # "epsilon" or "v_prediction"
    spacing: str = "leading"  # timestep_spacing of the scheduler config
    offset: int = 0  # steps_offset of the scheduler config

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def abar(self, t: int) -> float:
        """abar_t, with the final value for t < 0 (as diffusers' DDIM does)."""
        return self.alphas_cumprod[t] if t >= 0 else self.final_abar

    def grid(self, steps: int) -> list[int]:
        """Descending DDIM timesteps for ``steps`` steps."""
        return timestep_grid(self.num_train_timesteps, steps, self.spacing, self.offset)

    def prev(self, t: int, steps: int) -> int:
        """The timestep a DDIM step from t lands on: t - T // steps (diffusers' rule)."""
        return t - self.num_train_timesteps // steps


def schedule_from_config(config: Any) -> Schedule:
    """Build a :class:`Schedule` from a diffusers scheduler (or its config), with its betas."""
    import torch

    cfg_ = getattr(config, "config", config)
    get = cfg_.get if hasattr(cfg_, "get") else (lambda k, d=None: getattr(cfg_, k, d))
    T = int(get("num_train_timesteps", 1000))
    kind = get("beta_schedule", "linear")
    b0, b1 = float(get("beta_start", 0.0001)), float(get("beta_end", 0.02))
    trained = get("trained_betas", None)
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
    elif kind == "linear":
        betas = torch.linspace(b0, b1, T, dtype=torch.float32)
    elif kind == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float32) ** 2
    elif kind == "squaredcos_cap_v2":
        def abar_fn(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - abar_fn((i + 1) / T) / abar_fn(i / T), 0.999) for i in range(T)],
                             dtype=torch.float32)
    else:
        raise ValueError(f"unsupported beta schedule {kind!r}")
    if get("rescale_betas_zero_snr", False):
        raise ValueError("rescale_betas_zero_snr schedules are not supported")
    # Same float32 arithmetic as diffusers, so abar values agree bit for bit.
    abar = torch.cumprod(1.0 - betas, dim=0)
    final = 1.0 if get("set_alpha_to_one", True) else float(abar[0])
    return Schedule(
        alphas_cumprod=tuple(float(a) for a in abar),
        final_abar=final,
        prediction_type=str(get("prediction_type", "epsilon")),
        spacing=str(get("timestep_spacing", "leading")),
        offset=int(get("steps_offset", 0)),
    )
