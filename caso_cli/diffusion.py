"""The diffusion math of docs/method.md as small pure functions on tensors.

A noise level is a :class:`Level` (alpha_t, sigma_t), z_t = alpha_t z0 + sigma_t n: for the variance-preserving
models (SD 1.x/2.x, SDXL) alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t), abar_t the cumulative product of
alphas; for flow-matching models (SD3) alpha_t = 1 - sigma_t (docs/method.md §2). Each part is a float or a tensor
that broadcasts against the latents. Nothing here touches a model or a device.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow_prediction")


class Level(NamedTuple):
    """A noise level: z_t = alpha z0 + sigma n (docs/method.md §2)."""

    alpha: Any
    sigma: Any


def vp_level(abar_t: Any) -> Level:
    """The level of a variance-preserving model at abar_t: (sqrt(abar_t), sqrt(1 - abar_t))."""
    return Level(abar_t**0.5, (1 - abar_t) ** 0.5)


def add_noise(z0: torch.Tensor, noise: torch.Tensor, level: Level) -> torch.Tensor:
    """Forward noising to t: z_t = alpha_t z0 + sigma_t n (docs/method.md Eq. 8)."""
    return level.alpha * z0 + level.sigma * noise


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, level: Level) -> torch.Tensor:
    """Clean estimate: zhat0 = (z_t - sigma_t eps) / alpha_t (docs/method.md Eq. 9)."""
    return (z_t - level.sigma * eps) / level.alpha


def v_to_eps(v: torch.Tensor, z_t: torch.Tensor, level: Level) -> torch.Tensor:
    """v-prediction to noise: eps = alpha_t v + sigma_t z_t (docs/method.md §2)."""
    return level.alpha * v + level.sigma * z_t


def flow_to_eps(u: torch.Tensor, z_t: torch.Tensor, level: Level) -> torch.Tensor:
    """Flow-matching velocity u = n - z0 to noise: eps = z_t + alpha_t u, alpha_t = 1 - sigma_t (docs/method.md §2)."""
    return z_t + level.alpha * u


def to_eps(model_output: torch.Tensor, z_t: torch.Tensor, level: Level, prediction_type: str) -> torch.Tensor:
    """The model's output as a noise prediction, for ``epsilon``, ``v_prediction`` or ``flow_prediction`` models
    (docs/method.md §2)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return v_to_eps(model_output, z_t, level)
    if prediction_type == "flow_prediction":
        return flow_to_eps(model_output, z_t, level)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def cfg(eps_null: torch.Tensor, eps_cond: torch.Tensor, scale: Any) -> torch.Tensor:
    """Classifier-free guidance: eps_w = eps_null + w (eps_cond - eps_null) (docs/method.md Eq. 2)."""
    return eps_null + scale * (eps_cond - eps_null)


def _ddim_move(z: torch.Tensor, eps: torch.Tensor, level_from: Level, level_to: Level) -> torch.Tensor:
    return level_to.alpha * predict_x0(z, eps, level_from) + level_to.sigma * eps


def ddim_step(z_t: torch.Tensor, eps: torch.Tensor, level_t: Level, level_prev: Level) -> torch.Tensor:
    """Deterministic DDIM denoising t -> t_prev: alpha_prev zhat0 + sigma_prev eps (docs/method.md Eq. 7); for a
    flow-matching model this is its Euler step z_t + (sigma_prev - sigma_t) u."""
    return _ddim_move(z_t, eps, level_t, level_prev)


def ddim_invert_step(z_prev: torch.Tensor, eps: torch.Tensor, level_prev: Level, level_next: Level) -> torch.Tensor:
    """DDIM inversion t_prev -> t: alpha_t zhat0(z_prev) + sigma_t eps (docs/method.md Eq. 6)."""
    return _ddim_move(z_prev, eps, level_prev, level_next)


def timestep_grid(num_train_timesteps: int, steps: int, spacing: str = "leading", offset: int = 0) -> list[int]:
    """The descending DDIM timestep grid, as diffusers' ``DDIMScheduler.set_timesteps`` builds it
    (docs/method.md §4)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "leading":
        ratio = num_train_timesteps // steps
        return [i * ratio + offset for i in range(steps - 1, -1, -1)]
    if spacing == "trailing":
        stride = num_train_timesteps / steps
        return [int(round(num_train_timesteps - i * stride)) - 1 for i in range(steps)]
    if spacing == "linspace":
        if steps == 1:
            return [0]
        last = num_train_timesteps - 1
        return [int(round(last * i / (steps - 1))) for i in range(steps - 1, -1, -1)]
    raise ValueError(f"unsupported timestep spacing {spacing!r}")


class NoiseSchedule(ABC):
    """A model's noise levels at the integer timesteps t = 0..T-1, plus the DDIM grid for a number of steps."""

    prediction_type: str  # what the network predicts: one of PREDICTION_TYPES
    spacing: str  # timestep_spacing of the DDIM grid
    offset: int  # steps_offset of the DDIM grid

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps."""

    @abstractmethod
    def level(self, t: int) -> Level:
        """(alpha_t, sigma_t); for t < 0 the level "before" t = 0 that the last DDIM step lands on."""

    def model_time(self, t: int) -> float | int:
        """The timestep value the network reads at t."""
        return t

    def grid(self, steps: int) -> list[int]:
        """Descending DDIM timesteps for ``steps`` steps."""
        return timestep_grid(self.num_train_timesteps, steps, self.spacing, self.offset)

    def prev(self, t: int, steps: int) -> int:
        """The timestep a DDIM step from t lands on: t - T // steps (diffusers' rule)."""
        return t - self.num_train_timesteps // steps


@dataclass(frozen=True)
class Schedule(NoiseSchedule):
    """A variance-preserving (DDPM) schedule: abar_t, the cumulative product of alphas (SD 1.x/2.x, SDXL)."""

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

    def level(self, t: int) -> Level:
        return vp_level(self.abar(t))


@dataclass(frozen=True)
class FlowSchedule(NoiseSchedule):
    """A rectified-flow schedule (SD3): z_t = (1 - sigma_t) z0 + sigma_t n, the network predicting u = n - z0.

    sigma_t = shift s / (1 + (shift - 1) s) with s = t / T, the shifted sigmas of diffusers'
    ``FlowMatchEulerDiscreteScheduler``; the network reads sigma_t T. The top of the grid (t = T - 1) stays just
    below pure noise, where a step written with eps (docs/method.md Eq. 7) is defined; there the DDIM step is the
    flow's Euler step.
    """

    sigmas: tuple[float, ...]  # sigma_t for t = 0..T-1
    prediction_type: str = "flow_prediction"
    spacing: str = "trailing"
    offset: int = 0

    @property
    def num_train_timesteps(self) -> int:
        return len(self.sigmas)

    def level(self, t: int) -> Level:
        sigma = self.sigmas[t] if t >= 0 else 0.0
        return Level(1.0 - sigma, sigma)

    def model_time(self, t: int) -> float:
        return self.sigmas[t] * self.num_train_timesteps

    def prev(self, t: int, steps: int) -> int:
        """The next timestep of the grid (-1 after the last): a flow's Euler step goes from one sigma of the grid to
        the next, whatever the spacing."""
        return next((u for u in self.grid(steps) if u < t), -1)


def _getter(config: Any) -> Any:
    """``get(key, default)`` on a diffusers scheduler, its config, or a dict."""
    cfg_ = getattr(config, "config", config)
    return cfg_.get if hasattr(cfg_, "get") else (lambda k, d=None: getattr(cfg_, k, d))


def flow_schedule_from_config(config: Any) -> FlowSchedule:
    """Build a :class:`FlowSchedule` from a diffusers ``FlowMatchEulerDiscreteScheduler`` (or its config)."""
    get = _getter(config)
    if get("use_dynamic_shifting", False):
        raise ValueError("flow-matching schedules with dynamic shifting (resolution-dependent) are not supported")
    T, shift = int(get("num_train_timesteps", 1000)), float(get("shift", 1.0))
    return FlowSchedule(sigmas=tuple(shift * (t / T) / (1 + (shift - 1) * (t / T)) for t in range(T)))


def schedule_from_config(config: Any) -> Schedule:
    """Build a :class:`Schedule` from a diffusers scheduler (or its config), with its betas."""
    import torch

    get = _getter(config)
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
