"""Editing from one inversion: scales batched, single-step, reuse (tiny model, 10 steps)."""

from __future__ import annotations

import pytest
import torch

from caso_cli.config import EditConfig
from caso_cli.errors import UsageError
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.guidance import cfg_guidance


def _setup(sd):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 16, 16, generator=g) * 0.5
    with torch.no_grad():
        cond = sd.family.encode_vectors(torch.randn(1, 16, generator=g))
    return z0, cond


def test_num_steps_from_start_fraction() -> None:
    assert EditConfig(steps=50, start=0.6).num_steps() == 30
    assert EditConfig(steps=50, start=1.0).num_steps() == 50
    assert EditConfig(steps=50, start=0.001).num_steps() == 1


@pytest.mark.slow
def test_batched_scales_equal_separate_edits(tiny_sd) -> None:
    z0, cond = _setup(tiny_sd)
    cfg = EditConfig(steps=10, start=0.5)
    z_t = invert_latents(tiny_sd, z0[:1], cfg)
    scales = torch.tensor([-3.0, 0.0, 4.0])
    batched = edit_latents(tiny_sd, z_t.expand(3, -1, -1, -1), cfg_guidance(tiny_sd, cond, scales), cfg)
    for i, w in enumerate(scales.tolist()):
        single = edit_latents(tiny_sd, z_t, cfg_guidance(tiny_sd, cond, w), cfg)
        assert torch.allclose(batched[i:i + 1], single, atol=1e-5)
    # scale 0 is the unguided reconstruction: the guided ones differ from it, in opposite directions
    d_neg, d_pos = batched[0] - batched[1], batched[2] - batched[1]
    assert d_neg.abs().mean() > 0 and d_pos.abs().mean() > 0
    assert torch.nn.functional.cosine_similarity(d_neg.flatten(), d_pos.flatten(), dim=0) < 0


@pytest.mark.slow
def test_single_step_guides_once(tiny_sd) -> None:
    z0, cond = _setup(tiny_sd)
    cfg = EditConfig(steps=10, start=0.5, single_step=True)
    z_t = invert_latents(tiny_sd, z0, cfg)
    null = edit_latents(tiny_sd, z_t, cfg_guidance(tiny_sd, cond, 0.0), cfg)
    one = edit_latents(tiny_sd, z_t, cfg_guidance(tiny_sd, cond, 5.0), cfg)
    full = edit_latents(tiny_sd, z_t, cfg_guidance(tiny_sd, cond, 5.0), EditConfig(steps=10, start=0.5))
    change_one, change_full = (one - null).abs().mean(), (full - null).abs().mean()
    assert 0 < change_one < change_full


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("leading", 0), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("steps,start", [(50, 600), (50, 601), (50, 981), (25, 500), (10, 999), (7, 2)])
def test_start_timestep_is_resolved_on_the_models_own_grid(spacing: str, offset: int, steps: int, start: int) -> None:
    """--start T guides from the largest timestep of diffusers' own grid that is <= T, for every spacing."""
    from diffusers import DDIMScheduler

    from caso_cli.cli.options import edit_config
    from caso_cli.diffusion import schedule_from_config

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, timestep_spacing=spacing, steps_offset=offset)
    sched.set_timesteps(steps)
    expected = sum(int(t) <= start for t in sched.timesteps)
    config = edit_config(steps, str(start), False)
    assert config.num_steps(schedule_from_config(sched.config)) == max(1, expected)


def test_start_timestep_outside_the_models_range_is_one_line() -> None:
    from caso_cli.cli.options import edit_config
    from caso_cli.diffusion import schedule_from_config

    small = schedule_from_config({"num_train_timesteps": 100})
    with pytest.raises(UsageError, match="1..99 for this model"):
        edit_config(10, "600", False).num_steps(small)
    with pytest.raises(UsageError, match="1..100 for this model"):
        edit_config(200, "0.5", False).num_steps(small)
    with pytest.raises(UsageError, match="whole timestep"):
        edit_config(10, "600.5", False)
    assert edit_config(50, "0.6", False).num_steps() == 30
