"""Quality of the toy model, measured with the pixel oracle (:mod:`caso_cli.toyworld.oracle`).

(a) :func:`vae_quality`: VAE reconstructions keep every attribute (target >= 99%), PSNR.
(b) :func:`prompt_quality`: text-to-image samples (DDIM + CFG) show a prompted attribute
    (target >= 90%), lack it when its absence is prompted (present <= 10%), hair colour as
    prompted (>= 90%).
(c) :func:`inversion_quality`: DDIM inversion with the null prompt + null denoising keeps every
    attribute (target >= 97%), PSNR.
(e) :func:`language_quality`: every phrasing of the captions' grammar, alone: how often samples show the class.
(d) :func:`prompt_edit_baseline`: inversion + guided denoising with a prompt naming an attribute
    (a plain prompt-editing baseline for CASO): how often the attribute appears and how often
    the other attributes change.

Every function takes the loaded model ``sd`` and seeds; all random numbers are seeded.
PSNR is :func:`caso_cli.eval.metrics.psnr` (still importable from here as ``quality.psnr``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caso_cli.config import EditConfig
from caso_cli.eval.metrics import psnr
from caso_cli.toyworld import captions as C
from caso_cli.toyworld import oracle
from caso_cli.toyworld import render as R
from caso_cli.toyworld import sample as S

TARGETS = {"vae_all": 0.99, "present": 0.90, "absent_max": 0.10, "hair": 0.90, "inversion_all": 0.97}
TEST_SEED = 90_000  # faces for measurements come from seeds far from the training seeds


def _round(d: dict[str, Any], nd: int = 4) -> dict[str, Any]:
    return {k: (round(v, nd) if isinstance(v, float) else v) for k, v in d.items()}


def vae_quality(sd: Any, n: int = 256, seed: int = TEST_SEED) -> dict[str, Any]:
    """(a) Oracle agreement of D(E(x)) with the labels of x, per attribute and for all, plus PSNR."""
    images, params = R.render_faces(n, seed)
    rec = S.decode(sd, S.encode(sd, images))
    out = oracle.agreement(oracle.read_attributes(rec), params)
    out["psnr"] = psnr(images, rec)
    out["n"] = n
    return _round(out)


def prompt_set() -> list[tuple[str, str, int]]:
    """(prompt, attribute, class) for (b): presence and absence of each binary attribute, each hair colour."""
    out = []
    for name in R.BINARY_ATTRIBUTES:
        out.append((C.prompt(C.DEFAULT, **{name: 1}), name, 1))
        out.append((C.prompt(C.DEFAULT, **{name: 0}), name, 0))
    for k, colour in enumerate(R.ATTRIBUTES["hair"]):
        out.append((C.prompt(hair=colour), "hair", k))
    return out


def prompt_quality(sd: Any, n_per_prompt: int = 48, seed: int = TEST_SEED, steps: int = 50,
                   scale: float = 5.0, return_images: bool = False) -> dict[str, Any]:
    """(b) For each prompt of :func:`prompt_set`, the share of samples the oracle reads as prompted.

    Keys: ``<attr>_present`` (present-prompt -> read present), ``<attr>_absent_present``
    (absence-prompt -> read present; lower is better), ``hair_<colour>`` (correct class),
    ``hair`` (mean of the three), ``face_found``, and ``ok`` (every target met).
    """
    plan = prompt_set()
    prompts = [p for p, _, _ in plan for _ in range(n_per_prompt)]
    images = S.sample(sd, prompts, seed, steps, scale)
    rd = oracle.read_attributes(images)
    out: dict[str, Any] = {}
    for j, (_, name, k) in enumerate(plan):
        read = getattr(rd, name)[j * n_per_prompt:(j + 1) * n_per_prompt]
        if name == "hair":
            out[f"hair_{R.ATTRIBUTES['hair'][k]}"] = float((read == k).mean())
        elif k == 1:
            out[f"{name}_present"] = float((read == 1).mean())
        else:
            out[f"{name}_absent_present"] = float((read == 1).mean())
    out["hair"] = float(np.mean([out[f"hair_{c}"] for c in R.ATTRIBUTES["hair"]]))
    out["face_found"] = float(rd.face_found.mean())
    out["ok"] = bool(all(out[f"{a}_present"] >= TARGETS["present"]
                         and out[f"{a}_absent_present"] <= TARGETS["absent_max"] for a in R.BINARY_ATTRIBUTES)
                     and min(out[f"hair_{c}"] for c in R.ATTRIBUTES["hair"]) >= TARGETS["hair"])
    out.update(n_per_prompt=n_per_prompt, steps=steps, scale=scale)
    out = _round(out)
    if return_images:
        out["_images"] = images
        out["_prompts"] = [p for p, _, _ in plan]
    return out


def language_set(grammar: C.Grammar) -> list[tuple[str, str, int]]:
    """(prompt, attribute, class) for (e): every phrasing of every class the oracle reads (background excluded), each
    alone after ``"a face with"`` (an adjective before ``"face"``)."""
    out = []
    for attr in (*R.BINARY_ATTRIBUTES, "hair", "skin", "eyes"):
        for k, options in enumerate(grammar.phrases.get(attr, ())):
            for p in options:
                out.append((C.compose([] if p.before else [p.text], "a face", [p.text] if p.before else []), attr, k))
    return out


def language_quality(sd: Any, grammar: C.Grammar, n_per_prompt: int = 16, seed: int = TEST_SEED + 3,
                     steps: int = 50, scale: float = 5.0) -> dict[str, Any]:
    """(e) How the model understands its captions' language: per prompt of :func:`language_set`, the share of
    samples the oracle reads as the named class (eye shape among samples without glasses), and the same shares in
    unconditional samples (``""``) for reference. Rarely named classes are expected to follow their words less."""
    plan = language_set(grammar)
    prompts = [p for p, _, _ in plan for _ in range(n_per_prompt)] + [""] * (4 * n_per_prompt)
    images = S.sample(sd, prompts, seed, steps, scale)
    rd = oracle.read_attributes(images)
    rows = []
    for j, (prompt, attr, k) in enumerate(plan):
        read = getattr(rd, attr)[j * n_per_prompt:(j + 1) * n_per_prompt]
        seen = read >= 0
        rows.append({"prompt": prompt, "attribute": attr, "class": C.CLASSES[attr][k],
                     "share": round(float((read[seen] == k).mean()) if seen.any() else float("nan"), 4)})
    base = {}
    for attr in (*R.BINARY_ATTRIBUTES, "hair", "skin", "eyes"):
        read = getattr(rd, attr)[len(plan) * n_per_prompt:]
        seen = read >= 0
        base[attr] = {c: round(float((read[seen] == k).mean()), 4) for k, c in enumerate(C.CLASSES[attr])}
    return {"grammar": grammar.name, "n_per_prompt": n_per_prompt, "steps": steps, "scale": scale, "rows": rows,
            "unconditional": base, "face_found": round(float(rd.face_found.mean()), 4)}


def inversion_quality(sd: Any, n: int = 128, seed: int = TEST_SEED + 1, steps: int = 50,
                      refine: int = EditConfig.inversion_refine) -> dict[str, Any]:
    """(c) Null-prompt DDIM inversion (``steps`` steps, ``refine`` fixed-point refinements per step as caso
    inverts; 0: plain DDIM inversion) then null denoising: agreement and PSNR.

    ``psnr`` compares with the input image, ``psnr_vs_vae`` with the plain VAE reconstruction
    (what a perfect inversion would give).
    """
    images, params = R.render_faces(n, seed)
    z0 = S.encode(sd, images)
    z_t = S.invert_null(sd, z0, steps, refine=refine)
    rec = S.decode(sd, S.denoise_prompt(sd, z_t, None, steps))
    out = oracle.agreement(oracle.read_attributes(rec), params)
    out["psnr"] = psnr(images, rec)
    out["psnr_vs_vae"] = psnr(S.decode(sd, z0), rec)
    out["n"] = n
    out["steps"] = steps
    out["refine"] = refine
    return _round(out)


def prompt_edit_baseline(sd: Any, n: int = 64, seed: int = TEST_SEED + 2, steps: int = 50,
                         scales: tuple[float, ...] = (1.0, 3.0, 5.0, 10.0), attribute: str = "mustache",
                         prompt: str | None = None) -> dict[str, Any]:
    """(d) Add ``attribute`` to faces without it: full null inversion, then denoising guided by ``prompt``.

    Per scale: ``added`` (oracle reads the attribute), ``others_changed`` (any other attribute
    differs from its label), ``edited_clean`` (added and nothing else changed), ``psnr``.
    """
    absent: dict[str, Any] = {f"p_{attribute}": 0.0}  # RenderConfig's probability field of ``attribute``
    config = R.RenderConfig(**absent)
    images, params = R.render_faces(n, seed, config)
    prompt = prompt or C.prompt(C.DEFAULT, **{attribute: 1})
    z_t = S.invert_null(sd, S.encode(sd, images), steps)
    others = [a for a in R.ATTRIBUTES if a != attribute]
    rows = {}
    for w in scales:
        edited = S.decode(sd, S.denoise_prompt(sd, z_t, prompt, steps, scale=w))
        rd = oracle.read_attributes(edited)
        added = getattr(rd, attribute) == 1
        changed = np.zeros(n, dtype=bool)
        for a in others:
            changed |= getattr(rd, a) != getattr(params, a)
        rows[str(w)] = _round({"added": float(added.mean()), "others_changed": float(changed.mean()),
                               "edited_clean": float((added & ~changed).mean()), "psnr": psnr(images, edited)})
    return {"attribute": attribute, "prompt": prompt, "n": n, "steps": steps, "scales": rows}


def summary_ok(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> dict[str, bool]:
    """Which of the (a)-(c) targets are met."""
    return {"vae": a["all"] >= TARGETS["vae_all"], "prompts": bool(b["ok"]),
            "inversion": c["all"] >= TARGETS["inversion_all"]}
