"""Editing baselines for CASO on the toy world, and comparison at equal edit success (issue 6, item 3).

Three baselines edit toy faces towards adding or removing a binary attribute, each with the
prompt the toy model was trained on (``"a face with a mustache"``, :func:`attribute_prompt`):

1. **prompt editing** (:func:`prompt_edit`): caso's own null DDIM inversion and schedule
   (:func:`caso_cli.pipelines.edit.invert_latents` / ``edit_latents`` with the same
   :class:`~caso_cli.config.EditConfig`), classifier-free guidance on the prompt instead of a
   learned condition. *Remove* = the same prompt at a negative scale (exactly caso's reverse
   edit); ``remove="no"`` instead guides towards the absence prompt ``"a face with no mustache"``
   at a positive scale.
2. **SEGA** (:func:`sega_edit`): diffusers' ``SemanticStableDiffusionPipeline`` as it ships
   (``diffusers.pipelines.deprecated.semantic_stable_diffusion`` in 0.42), DDIM scheduler of the
   model. SEGA generates from its ``latents=`` argument over the whole grid of
   ``num_inference_steps``, so it starts from caso's *full* null inversion (``start=1.0``, same
   grid: same scheduler config, same timesteps), with the empty prompt (its CFG term is then
   eps("") - eps("") = 0, so without edit guidance it denoises with the null condition alone, like
   caso's reconstruction) and ``guidance_scale=2`` only to switch its guidance branch on.
   ``edit_warmup_steps`` plays the part of caso's edit start. *Remove* =
   ``reverse_editing_direction=True`` on the same prompt.
3. **LEDITS++** (:func:`ledits_edit`): diffusers' ``LEditsPPPipelineStableDiffusion``, its own
   ``invert()`` (edit-friendly DDPM inversion, eta 1, empty source prompt) then ``__call__``. It
   accepts a ``DDIMScheduler`` or ``DPMSolverMultistepScheduler``; with the toy model's
   ``DDIMScheduler`` its ``invert()`` fails in diffusers 0.42.1 (``DDIMScheduler.add_noise`` gets a
   float timestep tensor as an index: IndexError), so it runs on ``DPMSolverMultistepScheduler``
   with ``algorithm_type="sde-dpmsolver++", solver_order=2`` built from the model's scheduler config
   (what the pipeline itself switches to for other schedulers). Its reconstruction without edit
   guidance is close to, not equal to, the VAE reconstruction (about 27 dB at 20 steps). Its
   implicit cross-attention mask stores only attention maps of at most (latent size / 4)^2 pixels:
   for the toy model's 16x16 latents that is 4x4,
   smaller than any attention map of its UNet (16x16 and 8x8), so ``use_intersect_mask=True``
   (the default) cannot run on it; every LEDITS++ run here uses ``use_intersect_mask=False,
   use_cross_attn_mask=False`` (the noise-estimate threshold mask ``edit_threshold`` stays).
   *Remove* = ``reverse_editing_direction=True`` on the same prompt.

Every sweep row has the same keys: ``method``, ``direction`` (``add``/``remove``), ``params``,
``n`` (faces not already in the target class), ``success`` (oracle reads the target),
``kept`` (every other attribute reads as before), ``kept_each`` (per other attribute) and ``psnr``
(dB, edit vs input): :func:`caso_cli.toyworld.measure.edit_scores`.
:func:`at_matched_success` compares methods by preservation at equal success.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caso_cli.config import EditConfig
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images
from caso_cli.pipelines.guidance import cfg_guidance
from caso_cli.toyworld import captions as C
from caso_cli.toyworld import oracle
from caso_cli.toyworld.measure import class_value, edit_rates, edit_scores, to_uint8, to_unit

#: Grids swept per method (each over the method's own documented parameters).
PROMPT_GRID: dict[str, tuple] = {"scale": (2.0, 3.0, 5.0, 7.0), "start": (0.4, 0.6, 0.8, 1.0)}
SEGA_GRID: dict[str, tuple] = {"edit_guidance_scale": (3.0, 5.0, 10.0), "edit_warmup_steps": (0, 10, 20),
                               "edit_threshold": (0.5, 0.9), "edit_momentum_scale": (0.0, 0.1)}
LEDITS_GRID: dict[str, tuple] = {"edit_guidance_scale": (3.0, 5.0, 10.0), "edit_threshold": (0.5, 0.75, 0.9),
                                 "skip": (0.15, 0.3)}
#: Smaller grids for quick runs.
QUICK_GRIDS: dict[str, dict[str, tuple]] = {
    "prompt": {"scale": (3.0, 7.0), "start": (0.6, 1.0)},
    "sega": {"edit_guidance_scale": (5.0, 10.0), "edit_warmup_steps": (0, 5), "edit_threshold": (0.5,),
             "edit_momentum_scale": (0.1,)},
    "ledits": {"edit_guidance_scale": (5.0, 10.0), "edit_threshold": (0.5, 0.9), "skip": (0.15,)},
}
SEGA_GUIDANCE_SCALE = 2.0  # > 1 switches SEGA's guidance branch on; with the empty prompt its CFG term is 0


def attribute_prompt(attr: str, present: int = 1, grammar: C.Grammar = C.DEFAULT) -> str:
    """The toy caption naming one attribute: ``"a face with a mustache"`` / ``"a face with no mustache"``."""
    return C.prompt(grammar, **{attr: present})


def grid(spec: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every combination of a parameter grid, as a list of keyword dicts (first key varies slowest)."""
    keys = list(spec)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(spec[k] for k in keys))]


# ---- the diffusers pipelines, built from the toy model's components -------------------------


def _build(cls: Any, components: dict[str, Any], **overrides: Any) -> Any:
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    parts = {k: v for k, v in {**components, **overrides}.items() if k in accepted}
    for name in ("safety_checker", "feature_extractor", "image_encoder"):
        if name in accepted:
            parts.setdefault(name, None)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipelines(folder: str | Path) -> tuple[Any, Any]:
    """(SEGA, LEDITS++) pipelines on the components of ``StableDiffusionPipeline.from_pretrained(folder)``.

    No safety checker (the toy model has none). SEGA gets a copy of the model's DDIM scheduler,
    LEDITS++ an sde-dpmsolver++ scheduler from the same config (module docstring).
    """
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        LEditsPPPipelineStableDiffusion,
        StableDiffusionPipeline,
    )
    from diffusers.pipelines.deprecated.semantic_stable_diffusion import SemanticStableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    comps = dict(base.components)
    for m in (comps["vae"], comps["unet"], comps["text_encoder"]):
        m.requires_grad_(False).eval()
    sega = _build(SemanticStableDiffusionPipeline, comps, requires_safety_checker=False,
                  scheduler=DDIMScheduler.from_config(comps["scheduler"].config))
    dpm = DPMSolverMultistepScheduler.from_config(comps["scheduler"].config, algorithm_type="sde-dpmsolver++",
                                                  solver_order=2)
    ledits = _build(LEditsPPPipelineStableDiffusion, comps, requires_safety_checker=False, scheduler=dpm)
    return sega, ledits


# ---- one edit per method ------------------------------------------------------------------


@torch.no_grad()
def prompt_edit(sd: Any, z_t: torch.Tensor, prompt: str, scale: float, config: EditConfig) -> torch.Tensor:
    """Clean latents: caso's guided denoising of inverted latents ``z_t`` with a text prompt as the condition."""
    cond = sd.family.encode_prompts([prompt])
    return edit_latents(sd, z_t, cfg_guidance(sd, cond, scale), config)


@torch.no_grad()
def sega_edit(pipe: Any, z_T: torch.Tensor, prompt: str, steps: int, reverse: bool = False,
              edit_guidance_scale: float = 5.0, edit_warmup_steps: int = 10, edit_threshold: float = 0.9,
              edit_momentum_scale: float = 0.1, edit_mom_beta: float = 0.4) -> torch.Tensor:
    """Clean latents from SEGA started at caso's full null inversion ``z_T`` (``EditConfig(steps, start=1.0)``).

    The defaults are the pipeline's own. Empty prompt, ``guidance_scale`` :data:`SEGA_GUIDANCE_SCALE`,
    eta 0, ``output_type="latent"`` (decode with caso's decoder: the same ``vae.decode(z / s)``).
    """
    b = z_T.shape[0]
    out = pipe(prompt=[""] * b, num_inference_steps=steps, guidance_scale=SEGA_GUIDANCE_SCALE, latents=z_T.clone(),
               output_type="latent", editing_prompt=[prompt], reverse_editing_direction=[reverse],
               edit_guidance_scale=[edit_guidance_scale], edit_warmup_steps=[edit_warmup_steps],
               edit_threshold=[edit_threshold], edit_momentum_scale=edit_momentum_scale, edit_mom_beta=edit_mom_beta)
    return out.images


def ledits_invert(pipe: Any, images: np.ndarray, steps: int, skip: float = 0.15, seed: int = 0) -> None:
    """LEDITS++'s own inversion of uint8 faces (N, H, W, 3), ``steps`` inversion steps, empty source prompt."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # [0, 1]: its input range
    gen = torch.Generator("cpu").manual_seed(seed)
    pipe.invert(image=x, source_prompt="", num_inversion_steps=steps, skip=skip, generator=gen)


@torch.no_grad()
def ledits_edit(pipe: Any, prompt: str, reverse: bool = False, edit_guidance_scale: float = 5.0,
                edit_threshold: float = 0.9, edit_warmup_steps: int = 0) -> torch.Tensor:
    """Clean latents of LEDITS++ for the images of the last :func:`ledits_invert` (defaults are the pipeline's).

    The intersect/cross-attention masks are off: they cannot run on the toy model (module docstring).
    """
    out = pipe(editing_prompt=[prompt], reverse_editing_direction=[reverse], edit_guidance_scale=[edit_guidance_scale],
               edit_threshold=[edit_threshold], edit_warmup_steps=[edit_warmup_steps], use_intersect_mask=False,
               use_cross_attn_mask=False, output_type="latent")
    return out.images


# ---- scoring and sweeps -------------------------------------------------------------------


def _directions(images: np.ndarray, attr: str) -> list[tuple[str, int, np.ndarray]]:
    """(direction, target, mask of faces not already in the target) for adding and removing ``attr``."""
    current = getattr(oracle.read_attributes(images), attr)
    return [(d, t, current != t) for d, t in (("add", 1), ("remove", 0)) if (current != t).any()]


def _row(method: str, direction: str, params: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "direction": direction, "params": params, **s}


def sweep_prompt(sd: Any, images: np.ndarray, attr: str, spec: dict[str, tuple] = PROMPT_GRID, steps: int = 50,
                 remove: str = "negative") -> list[dict[str, Any]]:
    """Prompt editing over scale x start; ``remove``: ``"negative"`` (-scale on the attribute prompt) or ``"no"``."""
    rows = []
    z0 = encode_images(sd, to_unit(images))
    for start in sorted(set(spec["start"])):
        config = EditConfig(steps=steps, start=start)
        z_t = invert_latents(sd, z0, config)
        for direction, target, todo in _directions(images, attr):
            for scale in spec["scale"]:
                if direction == "add":
                    prompt, w = attribute_prompt(attr, 1), scale
                elif remove == "negative":
                    prompt, w = attribute_prompt(attr, 1), -scale
                else:
                    prompt, w = attribute_prompt(attr, 0), scale
                x = to_uint8(decode_latents(sd, prompt_edit(sd, z_t[todo], prompt, w, config)))
                rows.append(_row("prompt", direction, {"scale": scale, "start": start, "remove": remove},
                                 edit_scores(images[todo], x, attr, target)))
    return rows


def sweep_sega(sd: Any, pipe: Any, images: np.ndarray, attr: str, spec: dict[str, tuple] = SEGA_GRID,
               steps: int = 50) -> list[dict[str, Any]]:
    """SEGA over its grid, from caso's full null inversion (one inversion for every setting)."""
    z_T = invert_latents(sd, encode_images(sd, to_unit(images)), EditConfig(steps=steps, start=1.0))
    prompt = attribute_prompt(attr, 1)
    rows = []
    for direction, target, todo in _directions(images, attr):
        for params in grid(spec):
            z = sega_edit(pipe, z_T[todo], prompt, steps, reverse=direction == "remove", **params)
            x = to_uint8(decode_latents(sd, z))
            rows.append(_row("sega", direction, params, edit_scores(images[todo], x, attr, target)))
    return rows


def sweep_ledits(sd: Any, pipe: Any, images: np.ndarray, attr: str, spec: dict[str, tuple] = LEDITS_GRID,
                 steps: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """LEDITS++ over its grid (its own inversion, once per ``skip`` and direction)."""
    prompt = attribute_prompt(attr, 1)
    rows = []
    skips = sorted(set(spec.get("skip", (0.15,))))
    edit_spec = {k: v for k, v in spec.items() if k != "skip"}
    for direction, target, todo in _directions(images, attr):
        for skip in skips:
            ledits_invert(pipe, images[todo], steps, skip, seed)
            for params in grid(edit_spec):
                z = ledits_edit(pipe, prompt, reverse=direction == "remove", **params)
                x = to_uint8(decode_latents(sd, z))
                rows.append(_row("ledits++", direction, {**params, "skip": skip},
                                 edit_scores(images[todo], x, attr, target)))
    return rows


def caso_curve(sd: Any, vectors: torch.Tensor, classes: list[str], attr: str, images: np.ndarray,
               scales: Iterable[float], starts: Iterable[float], steps: int = 50) -> list[dict[str, Any]]:
    """CASO's own rows over scale x start from :func:`caso_cli.toyworld.measure.edit_rates` (add: +w, remove: -w)."""
    positive = next(c for c in classes if class_value(attr, c) == 1)
    rows = []
    for start in starts:
        for scale in scales:
            r = edit_rates(sd, vectors, classes, attr, images, scale, EditConfig(steps=steps, start=start))
            for direction, key in (("add", positive), ("remove", f"-{positive}")):
                if key in r:
                    rows.append(_row("caso", direction, {"scale": scale, "start": start},
                                     {k: r[key][k] for k in ("n", "success", "kept", "psnr")}))
    return rows


# ---- comparing curves ---------------------------------------------------------------------


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (success, kept) points no other point beats on both, sorted by success (kept then falls)."""
    best: list[tuple[float, float]] = []
    for s, k in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if not best or k > best[-1][1]:
            best.append((s, k))
    return best[::-1]


def at_matched_success(rows: Sequence[dict[str, Any]], target: float = 0.9) -> dict[str, Any]:
    """Preservation at edit success ``target`` from one method's rows (one direction).

    ``best_kept``: the highest ``kept`` among settings with ``success >= target`` (and ``best``, that
    row's params); ``interpolated``: ``kept`` on the success-vs-preservation Pareto front, linear
    between the two front points whose success brackets ``target`` (what applying the two settings
    to complementary shares of the faces achieves); the best front point's ``kept`` when the front
    starts above ``target``. Both are None, and ``reached`` False, when no setting reaches ``target``.
    """
    pts = [(float(r["success"]), float(r["kept"])) for r in rows]
    hits = [r for r in rows if r["success"] >= target]
    if not hits:
        return {"target": target, "reached": False, "best_kept": None, "best": None, "interpolated": None,
                "max_success": max((p[0] for p in pts), default=None)}
    top = max(hits, key=lambda r: (r["kept"], r["success"]))
    front = pareto(pts)
    above = [p for p in front if p[0] >= target]
    below = [p for p in front if p[0] < target]
    if below:
        (s0, k0), (s1, k1) = below[-1], above[0]
        interp = k0 + (k1 - k0) * (target - s0) / (s1 - s0)
    else:
        interp = above[0][1]
    return {"target": target, "reached": True, "best_kept": float(top["kept"]), "best": top.get("params"),
            "best_success": float(top["success"]), "best_psnr": top.get("psnr"), "interpolated": float(interp),
            "max_success": max(p[0] for p in pts)}


def compare(rows: Sequence[dict[str, Any]], target: float = 0.9) -> list[dict[str, Any]]:
    """:func:`at_matched_success` per (method, direction), in the order they first appear."""
    keys = list(dict.fromkeys((r["method"], r["direction"]) for r in rows))
    return [{"method": m, "direction": d, **at_matched_success([r for r in rows if (r["method"], r["direction"])
                                                                 == (m, d)], target)} for m, d in keys]


__all__ = ["LEDITS_GRID", "PROMPT_GRID", "QUICK_GRIDS", "SEGA_GRID", "at_matched_success", "attribute_prompt",
           "caso_curve", "compare", "grid", "ledits_edit", "ledits_invert", "load_pipelines", "pareto", "prompt_edit",
           "sega_edit", "sweep_ledits", "sweep_prompt", "sweep_sega"]
