"""Editing baselines on the shipped toy model (prompt editing, SEGA, LEDITS++) and the matched-success comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caso_cli.config import EditConfig
from caso_cli.families import Condition
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images
from caso_cli.pipelines.guidance import cfg_guidance
from caso_cli.toyworld import baselines as B
from caso_cli.toyworld.measure import to_uint8, to_unit
from caso_cli.toyworld.quality import psnr
from caso_cli.toyworld.render import render_faces

PROMPT = "a face with a mustache"
STEPS = 4


# ---- the comparison at equal success (synthetic curves) ------------------------------------

def _rows(points: list[tuple[float, float]], method: str = "m", direction: str = "add") -> list[dict]:
    return [{"method": method, "direction": direction, "params": {"i": i}, "success": s, "kept": k, "psnr": 20.0}
            for i, (s, k) in enumerate(points)]


def test_pareto_drops_dominated_points_and_sorts_by_success() -> None:
    pts = [(0.5, 0.95), (0.8, 0.9), (0.95, 0.6), (1.0, 0.5), (0.92, 0.4), (0.8, 0.85)]
    assert B.pareto(pts) == [(0.5, 0.95), (0.8, 0.9), (0.95, 0.6), (1.0, 0.5)]


def test_matched_success_best_and_interpolated() -> None:
    rows = _rows([(0.5, 0.95), (0.8, 0.9), (0.95, 0.6), (1.0, 0.5), (0.92, 0.4)])
    r = B.at_matched_success(rows, 0.9)
    assert r["reached"] is True
    assert r["best_kept"] == 0.6 and r["best"] == {"i": 2} and r["best_success"] == 0.95
    # front points (0.8, 0.9) and (0.95, 0.6) bracket 0.9: 0.9 - 0.3 * (0.1 / 0.15) = 0.7
    assert r["interpolated"] == pytest.approx(0.7)
    assert r["max_success"] == 1.0


def test_matched_success_front_above_target_and_not_reached() -> None:
    above = B.at_matched_success(_rows([(0.95, 0.7), (1.0, 0.6)]), 0.9)
    assert above["best_kept"] == 0.7 and above["interpolated"] == 0.7
    missed = B.at_matched_success(_rows([(0.5, 0.9), (0.85, 0.8)]), 0.9)
    assert missed == {"target": 0.9, "reached": False, "best_kept": None, "best": None, "interpolated": None,
                      "max_success": 0.85}


def test_compare_groups_by_method_and_direction() -> None:
    rows = _rows([(1.0, 0.5)], "a") + _rows([(0.2, 1.0)], "a", "remove") + _rows([(0.95, 0.8), (0.9, 0.9)], "b")
    out = B.compare(rows, 0.9)
    assert [(r["method"], r["direction"]) for r in out] == [("a", "add"), ("a", "remove"), ("b", "add")]
    assert [r["best_kept"] for r in out] == [0.5, None, 0.9]


def test_grid_is_the_product_first_key_slowest() -> None:
    assert B.grid({"a": (1, 2), "b": (3, 4)}) == [{"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3},
                                                  {"a": 2, "b": 4}]


def test_attribute_prompts_are_the_toy_captions() -> None:
    assert B.attribute_prompt("mustache") == PROMPT
    assert B.attribute_prompt("mustache", 0) == "a face with no mustache"


# ---- the pipelines on the toy model --------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime
    from caso_cli.toyworld import MODEL_DIR

    torch.manual_seed(0)
    sd = load_model("toy", cpu_runtime())
    sega, ledits = B.load_pipelines(MODEL_DIR)
    faces, _ = render_faces(3, seed=910)
    z0 = encode_images(sd, to_unit(faces))
    return sd, sega, ledits, faces, z0


def _full(sd, z0):
    cfg = EditConfig(steps=STEPS, start=1.0)
    z_T = invert_latents(sd, z0, cfg)
    zeros = Condition(torch.zeros(1, 77, sd.family.text_encoder.config.hidden_size))
    rec = edit_latents(sd, z_T, cfg_guidance(sd, zeros, 0.0), cfg)
    return cfg, z_T, rec


@pytest.mark.slow
def test_pipelines_use_the_documented_schedulers(toy) -> None:
    _, sega, ledits, _, _ = toy
    assert type(sega.scheduler).__name__ == "DDIMScheduler" and sega.safety_checker is None
    assert type(ledits.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert ledits.scheduler.config.algorithm_type == "sde-dpmsolver++" and ledits.scheduler.config.solver_order == 2


@pytest.mark.slow
def test_prompt_edit_shapes_and_scale_zero_is_reconstruction(toy) -> None:
    sd, _, _, faces, z0 = toy
    cfg, z_T, rec = _full(sd, z0)
    z = B.prompt_edit(sd, z_T, PROMPT, 0.0, cfg)
    assert torch.allclose(z, rec, atol=1e-5)
    x = to_uint8(decode_latents(sd, B.prompt_edit(sd, z_T, PROMPT, 5.0, cfg)))
    assert x.shape == faces.shape and x.dtype == np.uint8
    assert np.abs(x.astype(int) - to_uint8(decode_latents(sd, rec)).astype(int)).max() > 10  # the prompt acts


@pytest.mark.slow
def test_sega_zero_edit_guidance_is_caso_null_reconstruction(toy) -> None:
    sd, sega, _, _, z0 = toy
    _, z_T, rec = _full(sd, z0)
    z = B.sega_edit(sega, z_T, PROMPT, STEPS, edit_guidance_scale=0.0)
    assert z.shape == z0.shape
    assert torch.allclose(z, rec, atol=1e-4)


@pytest.mark.slow
def test_sega_warmup_over_every_step_leaves_the_reconstruction(toy) -> None:
    sd, sega, _, _, z0 = toy
    _, z_T, rec = _full(sd, z0)
    z = B.sega_edit(sega, z_T, PROMPT, STEPS, edit_guidance_scale=8.0, edit_warmup_steps=STEPS)
    assert torch.allclose(z, rec, atol=1e-4)
    assert not torch.allclose(B.sega_edit(sega, z_T, PROMPT, STEPS, edit_guidance_scale=8.0, edit_warmup_steps=1),
                              rec, atol=1e-2)


@pytest.mark.slow
def test_sega_without_threshold_momentum_or_warmup_is_prompt_editing(toy) -> None:
    """Threshold 0 keeps every latent element, so SEGA reduces to CFG with the edit prompt (reverse: -w)."""
    sd, sega, _, _, z0 = toy
    cfg, z_T, rec = _full(sd, z0)
    plain = {"edit_guidance_scale": 4.0, "edit_warmup_steps": 0, "edit_threshold": 0.0, "edit_momentum_scale": 0.0}
    add = B.sega_edit(sega, z_T, PROMPT, STEPS, **plain)
    assert torch.allclose(add, B.prompt_edit(sd, z_T, PROMPT, 4.0, cfg), atol=1e-4)
    remove = B.sega_edit(sega, z_T, PROMPT, STEPS, reverse=True, **plain)
    assert torch.allclose(remove, B.prompt_edit(sd, z_T, PROMPT, -4.0, cfg), atol=1e-4)
    assert (add - rec).abs().max() > 0.1
    thresholded = B.sega_edit(sega, z_T, PROMPT, STEPS, **{**plain, "edit_threshold": 0.9})
    # 90% of the guidance elements zeroed: a smaller change on average (not necessarily at every element)
    assert (thresholded - rec).abs().mean() < (add - rec).abs().mean()


@pytest.mark.slow
def test_ledits_zero_guidance_is_the_unedited_result_and_guidance_acts(toy) -> None:
    sd, _, ledits, faces, z0 = toy
    B.ledits_invert(ledits, faces, STEPS, skip=0.15, seed=0)
    plain = ledits(output_type="latent", use_intersect_mask=False).images
    zero = B.ledits_edit(ledits, PROMPT, edit_guidance_scale=0.0)
    assert zero.shape == z0.shape
    assert torch.allclose(zero, plain, atol=1e-4)
    # its inversion reconstructs approximately (sde-dpmsolver++ in diffusers 0.42.1 is not exact)
    assert psnr(to_uint8(decode_latents(sd, z0)), to_uint8(decode_latents(sd, plain))) > 20
    add = B.ledits_edit(ledits, PROMPT, edit_guidance_scale=8.0, edit_threshold=0.5)
    remove = B.ledits_edit(ledits, PROMPT, reverse=True, edit_guidance_scale=8.0, edit_threshold=0.5)
    assert (add - plain).abs().max() > 0.1 and (add - remove).abs().max() > 0.1
    x = to_uint8(decode_latents(sd, add))
    assert x.shape == faces.shape and x.dtype == np.uint8


@pytest.mark.slow
def test_sweeps_return_one_scored_row_per_setting_and_direction(toy) -> None:
    from caso_cli.toyworld import oracle

    sd, sega, ledits, faces, _ = toy
    has = oracle.read_attributes(faces).mustache
    n = {"add": int((has == 0).sum()), "remove": int((has == 1).sum())}
    rows = (B.sweep_prompt(sd, faces, "mustache", {"scale": (3.0,), "start": (0.5, 1.0)}, steps=STEPS)
            + B.sweep_sega(sd, sega, faces, "mustache", {"edit_guidance_scale": (5.0,), "edit_warmup_steps": (0,),
                                                         "edit_threshold": (0.9,), "edit_momentum_scale": (0.1,)},
                           steps=STEPS)
            + B.sweep_ledits(sd, ledits, faces, "mustache", {"edit_guidance_scale": (5.0,), "edit_threshold": (0.9,),
                                                             "skip": (0.15,)}, steps=STEPS))
    directions = [d for d in ("add", "remove") if n[d]]
    assert len(rows) == len(directions) * (2 + 1 + 1)
    for r in rows:
        assert r["n"] == n[r["direction"]]
        assert 0.0 <= r["success"] <= 1.0 and 0.0 <= r["kept"] <= 1.0 and r["psnr"] > 5
    assert {r["method"] for r in rows} == {"prompt", "sega", "ledits++"}


@pytest.mark.slow
def test_caso_curve_rows_from_edit_rates(toy) -> None:
    sd, _, _, faces, _ = toy
    vectors = torch.randn(2, sd.token_dim, generator=torch.Generator().manual_seed(0)) * 0.01
    rows = B.caso_curve(sd, vectors, ["no_mustache", "mustache"], "mustache", faces, (2.0, 4.0), (0.5,), steps=STEPS)
    assert {(r["direction"], r["params"]["scale"]) for r in rows} >= {(rows[0]["direction"], 2.0),
                                                                      (rows[0]["direction"], 4.0)}
    assert all(r["method"] == "caso" and set(r) >= {"n", "success", "kept", "psnr"} for r in rows)
