"""Measure learned embeddings on the toy world with the oracle: guided generation and edits.

Attribute names here are the toy world's (``mustache``, ``glasses``, ``smile``, ``hair``, and the rarely named
``skin`` and ``eyes``: :data:`READ`);
an embedding's classes are matched to the attribute's classes by name (``no_mustache`` /
``mustache`` for binary attributes as ``classifier fit --labels`` names them, the colour
names for hair).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from caso_cli.config import EditConfig
from caso_cli.eval.metrics import psnr
from caso_cli.families import Condition
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import class_conditions, decode_latents, encode_images, samples_per_class
from caso_cli.pipelines.guidance import cfg_guidance
from caso_cli.toyworld import oracle
from caso_cli.toyworld import render as R
from caso_cli.toyworld.sample import to_uint8, to_unit  # also measure.to_uint8 / measure.to_unit for callers

#: Everything an edit is scored on: the four worded attributes and the two rarely named ones, skin tone (dark above
#: 0.5) and eye shape (read only without glasses). "kept" counts every one of them but the edited one.
READ: tuple[str, ...] = (*R.ATTRIBUTES, "skin", "eyes")
#: The classes of the rarely named attributes, as ``classifier fit --labels list_attr_toy.txt`` names them.
RARE_CLASSES = {"skin": ("no_dark_skin", "dark_skin"), "eyes": ("no_narrow_eyes", "narrow_eyes")}


def same(attr: str, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per image: ``attr`` reads the same (eye shape: also where glasses hide it in either image)."""
    if attr == "eyes":
        return (before == after) | (before < 0) | (after < 0)
    return before == after


def class_value(attr: str, cls: str) -> int:
    """The toy label value of an embedding class name: ``mustache`` -> 1, ``no_mustache`` -> 0, ``red`` -> 2,
    ``dark_skin`` -> 1 (attribute ``skin``), ``no_narrow_eyes`` -> 0 (attribute ``eyes``)."""
    c = cls.lower()
    if attr in RARE_CLASSES:
        if c in RARE_CLASSES[attr]:
            return RARE_CLASSES[attr].index(c)
        raise ValueError(f"class {cls!r} is not a class of toy attribute {attr!r}")
    names = R.ATTRIBUTES[attr]
    if attr in R.BINARY_ATTRIBUTES:
        if c in ("no_" + attr, "no", "0", "false"):
            return 0
        if c in (attr, "yes", "1", "true"):
            return 1
    elif c in names:
        return names.index(c)
    raise ValueError(f"class {cls!r} is not a class of toy attribute {attr!r}")


def generation_accuracy(sd: Any, vectors: torch.Tensor, classes: list[str], attr: str, n_per_class: int = 32,
                        seed: int = 0, scale: float = 5.0, steps: int = 50) -> dict[str, float]:
    """Per class: fraction of images generated from noise with c_k (CFG) that the oracle reads as class k."""
    samples = samples_per_class(sd, vectors, n_per_class, seed, steps, scale)
    return {cls: float(np.mean(getattr(oracle.read_attributes(to_uint8(x)), attr) == class_value(attr, cls)))
            for cls, x in zip(classes, samples, strict=True)}


def others_kept(before: oracle.Readings, after: oracle.Readings, attr: str) -> np.ndarray:
    """Per image: every attribute other than ``attr`` reads the same."""
    keep = np.ones(len(before), dtype=bool)
    for name in READ:
        if name != attr:
            keep &= same(name, getattr(before, name), getattr(after, name))
    return keep


def edit_rates(sd: Any, vectors: torch.Tensor, classes: list[str], attr: str, images: np.ndarray,
               scale: float, config: EditConfig) -> dict[str, Any]:
    """Edit toy faces towards each class (+scale) and, for binary attributes, away from it (-scale).

    Returns success (oracle reads the target) among images not already in the target class, and
    preservation over the same images: ``kept`` (all other attributes unchanged at once) and
    ``kept_each`` (per other attribute), and PSNR (dB, edit vs input), plus the unguided
    reconstruction's preservation for reference.
    """
    conds = class_conditions(sd, vectors)
    z0 = encode_images(sd, to_unit(images))
    z_t = invert_latents(sd, z0, config)
    before = oracle.read_attributes(images)
    null = cfg_guidance(sd, conds[:1], 0.0)  # scale 0: the null reconstruction
    rec = oracle.read_attributes(to_uint8(decode_latents(sd, edit_latents(sd, z_t, null, config))))
    current = getattr(before, attr)
    result: dict[str, Any] = {"scale": scale, "start": config.start, "steps": config.steps, "n": len(images),
                              "reconstruction_kept": float(np.mean(others_kept(before, rec, attr)
                                                                   & (getattr(rec, attr) == current)))}
    edits = [(cls, cls, scale) for cls in classes]
    if attr in R.BINARY_ATTRIBUTES or attr in RARE_CLASSES:  # the reverse edit: the positive class at -scale
        positive = next(c for c in classes if class_value(attr, c) == 1)
        edits.append((f"-{positive}", positive, -scale))
    for label, cls, w in edits:
        k = classes.index(cls)
        target = class_value(attr, cls) if w > 0 else 1 - class_value(attr, cls)
        todo = current != target
        if not todo.any():
            continue
        z = edit_latents(sd, z_t[todo], cfg_guidance(sd, conds[k:k + 1], w), config)
        result[label] = edit_scores(images[todo], to_uint8(decode_latents(sd, z)), attr, target, _subset(before, todo))
    return result


def edit_scores(before: np.ndarray, after: np.ndarray, attr: str, target: int,
                readings: oracle.Readings | None = None) -> dict[str, Any]:
    """Edits ``after`` of faces ``before`` (uint8) read by the oracle: ``success`` (``attr`` reads ``target``),
    ``kept`` (every other attribute unchanged at once), ``kept_each`` (per other attribute), PSNR (dB).

    ``readings`` are the oracle's readings of ``before`` when the caller has them already.
    """
    rb = readings if readings is not None else oracle.read_attributes(before)
    ra = oracle.read_attributes(after)
    return {"n": len(before), "success": float(np.mean(getattr(ra, attr) == target)),
            "kept": float(np.mean(others_kept(rb, ra, attr))),
            "kept_each": {name: float(np.mean(same(name, getattr(rb, name), getattr(ra, name))))
                          for name in READ if name != attr},
            "psnr": round(psnr(before, after), 3)}


def _subset(r: oracle.Readings, mask: np.ndarray) -> oracle.Readings:
    import dataclasses

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(r):
        v = getattr(r, f.name)
        fields[f.name] = {k: a[mask] for k, a in v.items()} if isinstance(v, dict) else v[mask]
    return oracle.Readings(**fields)


def order_invariance(sd: Any, first: tuple[str, torch.Tensor], second: tuple[str, torch.Tensor], images: np.ndarray,
                     scale: float, config: EditConfig) -> dict[str, float]:
    """Edit with the two-token condition [BOS, e_a, e_b, EOS...] and with [BOS, e_b, e_a, EOS...] (docs/method.md §1).

    ``first``/``second``: (toy attribute, the vector of its positive class). Returns the share of pixels
    that differ at all and by more than 4 levels, the share of faces whose oracle readings agree, and
    the share where both attributes were added (a-b order).
    """
    (attr_a, a), (attr_b, b) = first, second
    z_t = invert_latents(sd, encode_images(sd, to_unit(images)), config)
    with torch.no_grad():
        c_ab = sd.family.encode_vectors(torch.stack([a, b]).to(sd.runtime.device))
        c_ba = sd.family.encode_vectors(torch.stack([b, a]).to(sd.runtime.device))
    x_ab = to_uint8(decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, c_ab, scale), config)))
    x_ba = to_uint8(decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, c_ba, scale), config)))
    diff = np.abs(x_ab.astype(int) - x_ba.astype(int)).max(axis=-1)
    r_ab, r_ba = oracle.read_attributes(x_ab), oracle.read_attributes(x_ba)
    same = np.ones(len(images), dtype=bool)
    for name in R.ATTRIBUTES:
        same &= getattr(r_ab, name) == getattr(r_ba, name)
    return {"pixels_differing_any": float((diff > 0).mean()), "pixels_differing_gt4": float((diff > 4).mean()),
            "oracle_same_all": float(same.mean()),
            "both_added_ab": float(np.mean((getattr(r_ab, attr_a) == 1) & (getattr(r_ab, attr_b) == 1)))}


def guided_reconstruction(sd: Any, vectors: torch.Tensor, classes: list[str], attr: str, images: np.ndarray,
                          scale: float, config: EditConfig) -> dict[str, dict[str, float]]:
    """Reconstruct faces from their inversion, unguided and guided by each face's own class at ``scale``
    (docs/method.md §5).

    Per variant: ``kept_all`` (every attribute reads as before) and ``psnr`` (dB vs the input).
    """
    z_t = invert_latents(sd, encode_images(sd, to_unit(images)), config)
    before = oracle.read_attributes(images)
    own = getattr(before, attr)
    index = {class_value(attr, c): k for k, c in enumerate(classes)}
    idx = torch.tensor([index[int(v)] for v in own])
    per_class = class_conditions(sd, vectors)
    # each face's own row; Condition.__getitem__ takes slices only, so its tensors are indexed here
    conds = Condition(per_class.hidden[idx], {k: v[idx] for k, v in per_class.extra.items()})
    out = {}
    for label, w in (("unguided", 0.0), (f"guided w={scale:g}", scale)):
        x = to_uint8(decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, conds, w), config)))
        after = oracle.read_attributes(x)
        kept = others_kept(before, after, attr) & (getattr(after, attr) == own)
        out[label] = {"kept_all": float(kept.mean()), "psnr": round(psnr(images, x), 2)}
    return out
