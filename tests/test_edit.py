"""Editing from one inversion: scales batched, single-step, reuse (tiny model, 10 steps)."""

from __future__ import annotations

import torch

from caso_cli.conditioning import encode_vectors
from caso_cli.config import EditConfig
from caso_cli.pipelines.edit import edit_latents, invert_latents


def _setup(sd):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 16, 16, generator=g) * 0.5
    with torch.no_grad():
        cond = encode_vectors(sd.text_encoder, sd.tokenizer, torch.randn(1, 16, generator=g))
    return z0, cond


def test_num_steps_from_start_fraction() -> None:
    assert EditConfig(steps=50, start=0.6).num_steps() == 30
    assert EditConfig(steps=50, start=1.0).num_steps() == 50
    assert EditConfig(steps=50, start=0.001).num_steps() == 1


def test_batched_scales_equal_separate_edits(tiny_sd) -> None:
    z0, cond = _setup(tiny_sd)
    cfg = EditConfig(steps=10, start=0.5)
    z_t = invert_latents(tiny_sd, z0[:1], cfg)
    scales = torch.tensor([-3.0, 0.0, 4.0])
    batched = edit_latents(tiny_sd, z_t.expand(3, -1, -1, -1), cond, scales, cfg)
    for i, w in enumerate(scales.tolist()):
        single = edit_latents(tiny_sd, z_t, cond, w, cfg)
        assert torch.allclose(batched[i:i + 1], single, atol=1e-5)
    # scale 0 is the unguided reconstruction: the guided ones differ from it, in opposite directions
    d_neg, d_pos = batched[0] - batched[1], batched[2] - batched[1]
    assert d_neg.abs().mean() > 0 and d_pos.abs().mean() > 0
    assert torch.nn.functional.cosine_similarity(d_neg.flatten(), d_pos.flatten(), dim=0) < 0


def test_single_step_guides_once(tiny_sd) -> None:
    z0, cond = _setup(tiny_sd)
    cfg = EditConfig(steps=10, start=0.5, single_step=True)
    z_t = invert_latents(tiny_sd, z0, cfg)
    null = edit_latents(tiny_sd, z_t, cond, 0.0, cfg)
    one = edit_latents(tiny_sd, z_t, cond, 5.0, cfg)
    full = edit_latents(tiny_sd, z_t, cond, 5.0, EditConfig(steps=10, start=0.5))
    change_one, change_full = (one - null).abs().mean(), (full - null).abs().mean()
    assert 0 < change_one < change_full


def test_start_as_timestep_counts_grid_steps_up_to_it() -> None:
    from caso_cli.cli.edit import edit_config

    # SD 1.x grid for 50 steps: 1, 21, ..., 981
    assert edit_config(50, "600", False).num_steps() == 30  # 1..581
    assert edit_config(50, "601", False).num_steps() == 31  # 1..601
    assert edit_config(50, "981", False).num_steps() == 50
    assert edit_config(50, "0.6", False).num_steps() == 30
