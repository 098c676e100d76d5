"""The DDIM/guidance math against diffusers' own scheduler."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from caso_cli import diffusion as D
from caso_cli.models.build import scheduler_config


def _scheduler(**overrides) -> DDIMScheduler:
    return DDIMScheduler(**{**scheduler_config(), **overrides})


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("leading", 0), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("steps", [1, 7, 20, 50, 999])
def test_timestep_grid_matches_diffusers(spacing: str, offset: int, steps: int) -> None:
    sched = _scheduler(timestep_spacing=spacing, steps_offset=offset)
    sched.set_timesteps(steps)
    assert D.timestep_grid(1000, steps, spacing, offset) == sched.timesteps.tolist()


def test_timestep_grid_rejects_bad_steps() -> None:
    with pytest.raises(ValueError):
        D.timestep_grid(1000, 0)
    with pytest.raises(ValueError):
        D.timestep_grid(1000, 1001)


@pytest.mark.parametrize("kind", ["scaled_linear", "linear", "squaredcos_cap_v2"])
def test_schedule_alphas_match_diffusers(kind: str) -> None:
    sched = _scheduler(beta_schedule=kind)
    ours = D.schedule_from_config(sched)
    assert torch.equal(torch.tensor(ours.alphas_cumprod, dtype=torch.float32), sched.alphas_cumprod)
    assert ours.final_abar == pytest.approx(float(sched.final_alpha_cumprod))
    assert ours.abar(-19) == ours.final_abar
    assert ours.prev(981, 50) == 961


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_ddim_step_matches_diffusers(prediction_type: str, set_alpha_to_one: bool) -> None:
    sched = _scheduler(prediction_type=prediction_type, set_alpha_to_one=set_alpha_to_one)
    sched.set_timesteps(50)
    sch = D.schedule_from_config(sched)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for t in sched.timesteps.tolist():
        z = torch.randn(2, 4, 8, 8, generator=g)
        out = torch.randn(2, 4, 8, 8, generator=g)
        ref = sched.step(out, t, z, eta=0.0).prev_sample
        eps = D.to_eps(out, z, sch.level(t), prediction_type)
        ours = D.ddim_step(z, eps, sch.level(t), sch.level(sch.prev(t, 50)))
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-5


def test_add_noise_matches_diffusers_and_x0_inverts_it() -> None:
    sched = _scheduler()
    sch = D.schedule_from_config(sched)
    g = torch.Generator().manual_seed(1)
    z0, n = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = 401
    ref = sched.add_noise(z0, n, torch.tensor([t]))
    zt = D.add_noise(z0, n, sch.level(t))
    assert (zt - ref).abs().max().item() < 1e-5
    assert (D.predict_x0(zt, n, sch.level(t)) - z0).abs().max().item() < 1e-5


def test_v_to_eps_recovers_noise() -> None:
    sched = _scheduler(prediction_type="v_prediction")
    g = torch.Generator().manual_seed(2)
    z0, n = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([600])
    v = sched.get_velocity(z0, n, t)
    zt = sched.add_noise(z0, n, t)
    eps = D.v_to_eps(v, zt, D.vp_level(float(sched.alphas_cumprod[600])))
    assert (eps - n).abs().max().item() < 1e-5


def test_cfg_is_linear_in_scale() -> None:
    null, cond = torch.zeros(1, 2), torch.tensor([[1.0, -2.0]])
    assert torch.equal(D.cfg(null, cond, 0.0), null)
    assert torch.equal(D.cfg(null, cond, 1.0), cond)
    assert torch.allclose(D.cfg(null, cond, 5.0), torch.tensor([[5.0, -10.0]]))
    assert torch.allclose(D.cfg(null, cond, -3.0), torch.tensor([[-3.0, 6.0]]))
    other = torch.tensor([[0.5, 0.5]])
    assert torch.allclose(D.cfg(other, cond, 2.0), other + 2 * (cond - other))


def test_invert_step_then_denoise_step_is_identity() -> None:
    sch = D.schedule_from_config(_scheduler())
    g = torch.Generator().manual_seed(3)
    z, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    up = D.ddim_invert_step(z, eps, sch.level(381), sch.level(401))
    back = D.ddim_step(up, eps, sch.level(401), sch.level(381))
    assert (back - z).abs().max().item() < 1e-5
