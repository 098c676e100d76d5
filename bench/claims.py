"""Edits that change only what was asked, on the toy world: caso (plain and --hold) against prompt editing, SEGA,
LEDITS++ and a ceiling no user has, over one shared guidance ladder, from >= 3 learning seeds.

    python bench/claims.py --out docs/results.md             # full run (about an hour on 2 idle CPU cores)
    python bench/claims.py --quick --out /tmp/results.md     # small: a smoke run, not the measurement

Every method edits the same held-out faces (add: faces without the attribute; remove: faces with it) at every
guidance scale of LADDER and every start of STARTS (the method's own equivalent where it has no start: SEGA's
warm-up steps, LEDITS++'s skip). Scores per edit batch, read by the toy oracle: success (the target class), kept
(every other attribute unchanged), and distance to the true counterfactual (the renderer draws each face again
with only the edited attribute changed: PSNR and SSIM, beside the input itself and the VAE reconstruction of the
counterfactual). caso's vectors are learned with LearnConfig() defaults from each seed of --seeds; the table gives
the mean and the range over seeds. The setting reported against the targets is chosen per direction on separate
validation faces (VAL_SEED) before the test faces are edited.

Writes the markdown report (--out), its raw rows (same name, .json) and two pictures (img/<report name>-front.png
and -edits.png beside it; the figure needs matplotlib: pip install -e '.[bench]').
Learned vectors and classifiers are cached in --work (rerunning reuses them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caso_cli.config import T_SCREEN, EditConfig, LearnConfig
from caso_cli.contexts import words
from caso_cli.models.classifier import load_classifier, save_classifier
from caso_cli.models.loaders import load_model, local_model_dir
from caso_cli.pipelines.classifier_guidance import classifier_guided_latents
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import class_conditions, decode_latents, encode_images
from caso_cli.pipelines.guidance import Contrast, cfg_guidance
from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, read_classes, source_classes
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.pipelines.learn_runs import screen_t
from caso_cli.runtime import cpu_runtime, pin_threads
from caso_cli.toyworld import baselines as B
from caso_cli.toyworld import captions as C
from caso_cli.toyworld import measure, oracle
from caso_cli.toyworld.captions import contexts, held_context, phrase
from caso_cli.toyworld.captions import prompt as caption
from caso_cli.toyworld.counterfactual import counterfactual_scores, counterfactuals, vae_reconstruction
from caso_cli.toyworld.render import render_faces
from caso_cli.toyworld.sample import labelled_grid

sys.path.insert(0, str(Path(__file__).parent))
from learning_sweep import CLASSIFIER_SEED, TRAIN_SEED, fit_toy_classifier  # noqa: E402

EDIT_SEED, VAL_SEED, LEDITS_SEED = 910, 930, 0
LADDER = (0.5, 1.0, 2.0, 3.0, 5.0)  # --ladder replaces it (a smoke run only)
STARTS = [0.4, 0.6, 1.0]  # edit starts (--starts); 1.0: from the full inversion
FORM_LADDER = (1.0, 3.0, 5.0)  # the scales at which --hold with separately learned vectors is measured (--forms)
VAL_LADDER = (1.0, 2.0, 3.0, 5.0)  # the scales among which the validation faces choose --hold's form and setting
EDITED = ["mustache", "glasses", "smile"]  # --attrs replaces it (the second world adds skin and eyes)
TOKENS = ("glasses", "hair", "mustache", "smile")  # every toy attribute, in token (name) order
TARGET = 0.9  # edit success at which methods are compared
FORMS = ("null", "source", "delta")  # the guidance forms of --hold (caso_cli.pipelines.hold)
# caso's arms (issue 24): the paper's whole prompt; in context (token in the slot, ctx form), with the default
# context or the held classes in words; the paired form; the vector as a delta on the slot's output state; the norm
# held to 2 word norms (learning through the edit was measured on the first world and removed: docs/learning.md)
ARMS = {  # method -> (vectors, edit context: None whole prompt / "default" / "held", form)
    "caso": ("single", None, "paper"),
    "caso ctx": ("ctx", "default", "ctx"),
    "caso ctx --hold": ("ctx", "held", "ctx"),
    "caso ctx pair --hold": ("ctx", "held", "pair"),
    "caso out --hold": ("out", "held", "ctx"),
    "caso ctx norm2 --hold": ("norm2", "held", "ctx"),
}
BASELINES = ("prompt", "prompt ctx", "prompt ctx --hold", "sega", "ledits++", "classifier guidance", "ceiling")
CG_UNIT = 1.0  # classifier guidance's strength s = CG_UNIT x the ladder's w (probed on the first model: s 0.1-100)
METHODS = (*ARMS, "caso --hold", *BASELINES)
DEFAULT_METHODS = (*ARMS, *BASELINES)  # "caso --hold" (vectors learned together) only when asked (--methods)
SEPARATE = "caso --hold (separately learned)"  # validation only (--forms)
SEEDED = ("caso", "caso --hold", SEPARATE, *ARMS)
DEFAULT_W, DEFAULT_START = 5.0, 0.6  # caso edit's --scale and --start
METHOD_NOTES = {
    "caso": "the paper: [e_1] against null at ±w",
    "caso ctx": "learned in context (token in the slot), eps(ctx) + w (eps(ctx + e_target) - eps(ctx)), ctx = "
                "'a face with {}'",
    "caso ctx --hold": "the same vectors, ctx = the other attributes as their classifiers read them, in words",
    "caso ctx pair --hold": "paired form eps(ctx) + w (eps(ctx + e_target) - eps(ctx + e_source))",
    "caso out --hold": "learned in context as a delta on the slot's output state",
    "caso ctx norm2 --hold": "in context, vector norm held to 2 word norms",
    "caso --hold": "vectors learned together, held as learned tokens",
    "prompt": "'a face with <positive phrase>' against null at ±w",
    "prompt ctx": "'a face' -> 'a face with <target phrase>' as a difference",
    "prompt ctx --hold": "the held context in words -> the same with the target phrase",
    "sega": "SEGA (diffusers), warm-up (1 - start) x steps",
    "ledits++": "LEDITS++ (diffusers)",
    "classifier guidance": "no learning: the attribute's classifier on the decoded clean estimate at every step, "
                           "s = CG_UNIT x w (caso_cli.pipelines.classifier_guidance)",
    "ceiling": "the full caption the oracle reads, target flipped, against null (no user has it)",
}
FIRST_SEED = [0]  # the validation seed (the first of --seeds)
GRAMMAR = [C.DEFAULT]  # the caption grammar of the model measured (--model)
T_AUTO = [False]  # learn at the t* embed learn's default screen chooses (--t-train auto), not LearnConfig's 201


def log(**kw: Any) -> None:
    print(json.dumps(kw, default=str), file=sys.stderr, flush=True)


# ---- inputs: classifiers and learned vectors, cached ---------------------------------------------------------------


def classifiers(work: Path, n_clf: int) -> dict[str, Any]:
    out = {}
    for attr in dict.fromkeys([*TOKENS, *EDITED]):
        path = work / f"{attr}.clf"
        if not path.exists():
            clf, fit = fit_toy_classifier(attr, work, n_clf)
            save_classifier(clf, path)
            log(classifier=attr, val_accuracy=fit.val_accuracy)
        out[attr] = load_classifier(path)
    return out


LEARN_THREADS = 1  # learning runs at one CPU thread (the count changes learned bits); editing does not depend on it


def learned(sd: Any, clfs: dict[str, Any], work: Path, seed: int, steps: int | None,
            only: set[tuple[int, str, str]] | None = None) -> dict[str, dict]:
    """{arm: {attr: (K, d)}} learned from TRAIN_SEED faces with LearnConfig() and each arm's changes, at
    LEARN_THREADS CPU threads (:func:`_learned`)."""
    threads = torch.get_num_threads()
    pin_threads(LEARN_THREADS)
    try:
        return _learned(sd, clfs, work, seed, steps, only)
    finally:
        pin_threads(threads)


ONE_STEP_ARMS = {"single": {}, "ctx": {}, "out": {"placement": "output"}, "norm2": {"max_norm": 2.0}}
RUN = {"methods": list(DEFAULT_METHODS)}  # the methods of this run (--methods)


def arms_needed() -> list[str]:
    """The vector sets the run's methods edit with (one-step arms first)."""
    want = {ARMS[m][0] for m in RUN["methods"] if m in ARMS}
    return [a for a in ONE_STEP_ARMS if a in want]


def arm_config(arm: str, attr: str, cfg: LearnConfig) -> LearnConfig:
    from caso_cli.toyworld.captions import contexts

    if arm == "single":
        return cfg
    return dataclasses.replace(cfg, contexts=contexts(attr, grammar=GRAMMAR[0]), **ONE_STEP_ARMS[arm])


def learn_jobs(seeds: list[int]) -> list[tuple[int, str, str]]:
    """(seed, arm, attribute) of every learning run, one-step runs before the runs that refine them."""
    return [(seed, arm, attr) for arm in arms_needed() for seed in seeds for attr in EDITED]


def _learned(sd: Any, clfs: dict[str, Any], work: Path, seed: int, steps: int | None,
             only: set[tuple[int, str, str]] | None = None) -> dict[str, dict]:
    """{arm: {attr: (K, d)}} for every arm the run needs (and "together" for caso --hold), learned from TRAIN_SEED
    faces; ``only`` restricts which runs this process may learn (the others must be cached already)."""
    cfg = LearnConfig(checkpoint_every=0, seed=seed, **({"steps": steps} if steps else {}))
    x = measure.to_unit(render_faces(200, TRAIN_SEED)[0])
    tag = f"{seed}" + (f"-s{steps}" if steps else "") + ("-tauto" if T_AUTO[0] else "")
    out: dict[str, dict] = {}
    for arm in arms_needed():
        out[arm] = {}
        for attr in EDITED:
            path = work / f"{arm}-{attr}-{tag}.pt"
            if not path.exists() and (only is None or (seed, arm, attr) in only):
                t0 = time.monotonic()
                acfg = arm_config(arm, attr, cfg)
                if T_AUTO[0]:  # t* as embed learn chooses it by default: the screen of T_SCREEN
                    acfg, screen = screen_t(sd, clfs[attr], x, dataclasses.replace(acfg, t_screen=T_SCREEN))
                    log(screen=arm, attr=attr, seed=seed, **screen)
                res = learn_embedding(sd, clfs[attr], x, acfg)
                torch.save(res.vectors, path)
                log(learned=arm, attr=attr, seed=seed, seconds=round(time.monotonic() - t0, 1),
                    per_step=round(res.seconds / res.steps, 4), check=res.check)
            if path.exists():
                out[arm][attr] = torch.load(path)
    if "caso --hold" in RUN["methods"]:
        single = out.setdefault("single", {})
        for attr in TOKENS:
            path = work / f"single-{attr}-{tag}.pt"
            if not path.exists():
                torch.save(learn_embedding(sd, clfs[attr], x, cfg).vectors, path)
            single[attr] = torch.load(path)
        path = work / f"joint-{tag}.pt"
        if not path.exists():
            t0 = time.monotonic()
            torch.save(learn_embedding(sd, [clfs[a] for a in TOKENS], x, cfg).per_attribute(), path)
            log(learned="together", seed=seed, seconds=round(time.monotonic() - t0, 1))
        out["together"] = dict(zip(TOKENS, torch.load(path), strict=True))
    return out


# ---- one edit of a batch of faces by one method at one setting ---------------------------------------------------


@dataclasses.dataclass
class Faces:
    """A set of faces, their oracle readings, and per start their null inversion (shared by every method)."""

    images: np.ndarray
    params: Any
    readings: oracle.Readings
    x: torch.Tensor
    z_t: dict[float, torch.Tensor]
    read: dict[str, np.ndarray]  # each attribute's class as its classifier reads the face (what a user has)

    @classmethod
    def make(cls, sd: Any, n: int, seed: int, steps: int, clfs: dict[str, Any]) -> Faces:
        images, params = render_faces(n, seed)
        x = measure.to_unit(images)
        z0 = encode_images(sd, x)
        read = {a: read_classes([Token(a, torch.zeros(1), clfs[a])], x)[:, 0].numpy() for a in TOKENS}
        return cls(images, params, oracle.read_attributes(images), x,
                   {s: invert_latents(sd, z0, EditConfig(steps=steps, start=s)) for s in STARTS}, read)

    def held_contexts(self, todo: np.ndarray, attr: str) -> list[str]:
        """Per face: the edit context naming every other attribute at the class its classifier reads."""
        return [held_context(attr, {a: int(v[i]) for a, v in self.read.items()}, GRAMMAR[0])
                for i in np.nonzero(todo)[0]]


def edit(sd: Any, pipes: tuple[Any, Any], method: str, faces: Faces, todo: np.ndarray, attr: str, target: int,
         w: float, start: float, steps: int, vecs: dict[str, dict] | None, clfs: dict[str, Any],
         form: str = "null") -> np.ndarray:
    """uint8 edits of ``faces.images[todo]`` towards class ``target`` of ``attr``."""
    cfg = EditConfig(steps=steps, start=start)
    mask = torch.from_numpy(todo)
    z_t = faces.z_t[start][mask]
    signed = w if target == 1 else -w  # remove: the positive class at -w (caso's and prompt editing's reverse edit)
    if method == "caso":
        assert vecs is not None
        v = vecs["single"][attr]
        z = edit_latents(sd, z_t, cfg_guidance(sd, class_conditions(sd, v)[1:2], signed), cfg)
    elif method in ARMS:  # towards the target class's vector at +w
        assert vecs is not None
        arm, where, form = ARMS[method]
        v = vecs[arm][attr]
        if where is None:  # the whole prompt against the null condition
            z = edit_latents(sd, z_t, cfg_guidance(sd, class_conditions(sd, v)[target:target + 1], w), cfg)
        else:
            placement = "output" if arm == "out" else "token"
            ctx = faces.held_contexts(todo, attr) if where == "held" else \
                [contexts(attr, grammar=GRAMMAR[0])[0]] * int(todo.sum())
            with torch.no_grad():
                conds = [sd.family.encode_in_context(ctx, None, placement),
                         sd.family.encode_in_context(ctx, v[target], placement)]
                if form == "pair":
                    conds.append(sd.family.encode_in_context(ctx, v[1 - target], placement))
            z = edit_latents(sd, z_t, Contrast(conds, 0, [(w, 1, 2 if form == "pair" else 0)]), cfg)
    elif method.startswith("prompt ctx"):  # the target class's phrase as a difference from a context in words
        ctx = faces.held_contexts(todo, attr) if method.endswith("--hold") else \
            [contexts(attr, grammar=GRAMMAR[0])[0]] * int(todo.sum())
        with torch.no_grad():
            conds = [sd.family.encode_prompts([words(c) for c in ctx]),
                     sd.family.encode_prompts([c.replace("{}", phrase(attr, target, GRAMMAR[0])) for c in ctx])]
        z = edit_latents(sd, z_t, Contrast(conds, 0, [(w, 1, 0)]), cfg)
    elif method.startswith("caso --hold"):
        assert vecs is not None
        v = vecs["single" if "separately" in method else "together"]
        held = [Token(a, v[a], clfs[a]) for a in TOKENS if a != attr]
        x = faces.x[mask]
        term = EditTerm(Token(attr, v[attr], clfs[attr]), 1, signed)
        z = edit_latents(sd, z_t, hold_contrast(sd, [term], held, read_classes(held, x), source_classes([term], x),
                                                 form), cfg)  # type: ignore[arg-type]
    elif method == "prompt":
        z = B.prompt_edit(sd, z_t, B.attribute_prompt(attr, 1, GRAMMAR[0]), signed, cfg)
    elif method == "classifier guidance":
        z = classifier_guided_latents(sd, z_t, clfs[attr], target, CG_UNIT * w, cfg)
    elif method == "ceiling":  # the face's full caption as the oracle reads it, the edited attribute at the target
        r = faces.readings
        named = [a for a in measure.READ if a in GRAMMAR[0].phrases]  # skin and eyes where the grammar names them
        caps = [caption(GRAMMAR[0], **{a: (target if a == attr else int(getattr(r, a)[i])) for a in named
                                       if a == attr or getattr(r, a)[i] >= 0})
                for i in np.nonzero(todo)[0]]
        with torch.no_grad():
            z = edit_latents(sd, z_t, cfg_guidance(sd, sd.family.encode_prompts(caps), w), cfg)
    elif method == "sega":
        warmup = round((1 - start) * steps)
        z = B.sega_edit(pipes[0], faces.z_t[1.0][mask], B.attribute_prompt(attr, 1, GRAMMAR[0]), steps,
                        reverse=target == 0, edit_guidance_scale=w, edit_warmup_steps=warmup)
    else:  # ledits++: its own inversion (done by the caller for this start and subset)
        z = B.ledits_edit(pipes[1], B.attribute_prompt(attr, 1, GRAMMAR[0]), reverse=target == 0, edit_guidance_scale=w)
    return measure.to_uint8(decode_latents(sd, z))


def ledits_skip(start: float) -> float:
    """LEDITS++'s skip for an edit start: the part of the trajectory not inverted, at least its default 0.15."""
    return max(0.15, round(1 - start, 3))


def sweep(sd: Any, pipes: tuple[Any, Any], methods: list[str], faces: Faces, attrs: tuple[str, ...], steps: int,
          seeds: dict[int, dict], clfs: dict[str, Any], forms: tuple[str, ...] = ("null",),
          counterfactual: bool = True, ladder: tuple[float, ...] | None = None,
          form_for: dict[str, str] | None = None,
          directions: tuple[str, ...] = ("add", "remove")) -> list[dict[str, Any]]:
    """One row per method, attribute, direction, start, scale (and seed and form where they apply)."""
    rows = []
    for attr in attrs:
        have = getattr(faces.readings, attr)
        for direction, target in (("add", 1), ("remove", 0)):
            if direction not in directions:
                continue
            todo = (have != target) & (have >= 0)  # eye shape: only where glasses do not hide it
            before = faces.images[todo]
            sub = measure._subset(faces.readings, todo)
            ref: dict[str, Any] = {}
            if counterfactual:
                cf = counterfactuals(faces.params.subset(todo), attr, target)
                ref = {"cf": cf, "vae": vae_reconstruction(sd, cf)}
                base = counterfactual_scores(before, before, cf, ref["vae"])
                rows.append({"method": "reference", "attr": attr, "direction": direction, "n": int(todo.sum()),
                             **{k: round(v, 4) for k, v in base.items() if k != "n"}})
            for method in methods:
                for start in STARTS:
                    if method == "ledits++":
                        B.ledits_invert(pipes[1], before, steps, ledits_skip(start), LEDITS_SEED)
                    hold_forms = (form_for[direction],) if form_for and method == "caso --hold" else forms
                    runs = [(s, f) for s in seeds for f in (hold_forms if "--hold" in method else (None,))] \
                        if method in SEEDED else [(None, None)]
                    for seed, form in runs:
                        for w in ladder or LADDER:
                            t0 = time.monotonic()
                            after = edit(sd, pipes, method, faces, todo, attr, target, w, start, steps,
                                         seeds.get(seed) if seed is not None else None, clfs, form or "null")
                            s = measure.edit_scores(before, after, attr, target, sub)
                            row = {"method": method, "attr": attr, "direction": direction, "start": start, "w": w,
                                   "seed": seed, "form": form, **s}
                            if counterfactual:
                                c = counterfactual_scores(after, before, ref["cf"])
                                row.update(cf_psnr=round(c["edit_psnr"], 3), cf_ssim=round(c["edit_ssim"], 4))
                            row["seconds"] = round(time.monotonic() - t0, 2)
                            rows.append(row)
                    log(done=method, attr=attr, direction=direction, start=start)
    return rows


# ---- summaries ---------------------------------------------------------------------------------------------------


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seeded rows averaged over seeds per setting, with each measure's range (min, max) over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["method"] != "reference":
            groups.setdefault((r["method"], r["attr"], r["direction"], r["start"], r["w"], r.get("form")), []).append(r)
    out = []
    for (method, attr, direction, start, w, form), rs in groups.items():
        row = {"method": method, "attr": attr, "direction": direction, "start": start, "w": w, "form": form,
               "n": rs[0]["n"], "seeds": [r["seed"] for r in rs]}
        for key in ("success", "kept", "psnr", "cf_psnr", "cf_ssim"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = float(np.mean(vals))
                row[f"{key}_range"] = [float(min(vals)), float(max(vals))]
        out.append(row)
    return out


def matched(means: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, attribute, direction: the best kept among settings whose mean success >= TARGET (test faces)."""
    out = []
    keys = list(dict.fromkeys((r["method"], r["attr"], r["direction"]) for r in means))
    for method, attr, direction in keys:
        rs = [r for r in means if (r["method"], r["attr"], r["direction"]) == (method, attr, direction)]
        hits = [r for r in rs if r["success"] >= TARGET]
        best = max(hits, key=lambda r: (r["kept"], r["success"])) if hits else None
        out.append({"method": method, "attr": attr, "direction": direction, "reached": best is not None,
                    "max_success": max(r["success"] for r in rs), "best": best,
                    "front": B.pareto([(r["success"], r["kept"]) for r in rs])})
    return out


def choose_settings(val_means: list[dict[str, Any]], method: str) -> dict[str, dict[str, Any]]:
    """Per direction, the one (form, start, w) for every attribute and seed: on validation faces, the highest mean
    kept over the attributes among settings whose success reaches TARGET for every attribute (else the highest
    mean success)."""
    chosen = {}
    for direction in ("add", "remove"):
        rs = [r for r in val_means if r["method"] == method and r["direction"] == direction]
        settings = sorted({(r["form"], r["start"], r["w"]) for r in rs})

        def score(setting: tuple[str, float, float], rs: list[dict[str, Any]] = rs) -> tuple[bool, float, float]:
            sel = [r for r in rs if (r["form"], r["start"], r["w"]) == setting]
            reached = min(r["success"] for r in sel) >= TARGET
            kept, success = float(np.mean([r["kept"] for r in sel])), float(np.mean([r["success"] for r in sel]))
            return (reached, kept, success) if reached else (reached, success, kept)

        form, start, w = max(settings, key=score)
        reached, a, b = score((form, start, w))
        chosen[direction] = {"form": form, "start": start, "w": w, "reached_on_validation": reached,
                             "validation_kept": a if reached else b, "validation_success": b if reached else a}
    return chosen


# ---- pictures ----------------------------------------------------------------------------------------------------


def front_figure(means: list[dict[str, Any]], path: Path) -> None:
    """Success against kept, one panel per attribute and direction; each method's points and its front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(EDITED), figsize=(4 * len(EDITED), 7.5), sharex=True, sharey=True)
    colours = dict(zip(METHODS, plt.get_cmap("tab20").colors, strict=False))
    for j, attr in enumerate(EDITED):
        for i, direction in enumerate(("add", "remove")):
            ax = axes[i][j]
            for method in METHODS:
                rs = [r for r in means if (r["method"], r["attr"], r["direction"]) == (method, attr, direction)]
                if not rs:
                    continue
                ax.scatter([r["success"] for r in rs], [r["kept"] for r in rs], s=10, alpha=0.35,
                           color=colours[method])
                front = B.pareto([(r["success"], r["kept"]) for r in rs])
                ax.plot([p[0] for p in front], [p[1] for p in front], "-o", ms=3, color=colours[method], label=method)
            ax.axvline(TARGET, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{direction} {attr}")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            if i == 1:
                ax.set_xlabel("edit success (oracle)")
            if j == 0:
                ax.set_ylabel("other attributes kept")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Every setting (dots) and each method's front (lines); caso: mean over learning seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pictures(sd: Any, pipes: tuple[Any, Any], faces: Faces, chosen: dict[str, Any], best: list[dict[str, Any]],
             seeds: dict[int, dict], clfs: dict[str, Any], steps: int, path: Path) -> None:
    """Six faces per attribute and direction: input, true counterfactual, and each method at its matched setting."""
    tiles, labels = [], []
    for attr in EDITED:
        have = getattr(faces.readings, attr)
        for direction, target in (("add", 1), ("remove", 0)):
            todo = have != target
            idx = np.nonzero(todo)[0][:6]
            first = np.zeros_like(todo)
            first[idx] = True
            tiles += [faces.images[first], counterfactuals(faces.params.subset(first), attr, target)]
            labels += [f"{direction} {attr}: input", "true counterfactual"]
            for m in best:
                if (m["attr"], m["direction"]) != (attr, direction) or m["method"] == SEEDED[2]:
                    continue
                setting = chosen[direction] if m["method"] == "caso --hold" else (m["best"] or {})
                if not setting:
                    continue
                seed = min(seeds)
                tiles.append(edit(sd, pipes, m["method"], faces, first, attr, target, setting["w"], setting["start"],
                                  steps, seeds[seed], clfs, setting.get("form") or "null")
                             if m["method"] != "ledits++" else
                             _ledits(sd, pipes, faces, first, attr, target, setting, steps, clfs))
                labels.append(f"{m['method']} w {setting['w']:g} start {setting['start']:g}"
                              + (f" (seed {seed})" if m["method"] in SEEDED else ""))
    labelled_grid(np.concatenate(tiles), labels, 6).save(path)


def _ledits(sd: Any, pipes: tuple[Any, Any], faces: Faces, todo: np.ndarray, attr: str, target: int,
            setting: dict[str, Any], steps: int, clfs: dict[str, Any]) -> np.ndarray:
    B.ledits_invert(pipes[1], faces.images[todo], steps, ledits_skip(setting["start"]), LEDITS_SEED)
    return edit(sd, pipes, "ledits++", faces, todo, attr, target, setting["w"], setting["start"], steps, None, clfs)


# ---- the report --------------------------------------------------------------------------------------------------


def _f(v: Any, nd: int = 2) -> str:
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _rng(r: dict[str, Any], key: str, nd: int = 2) -> str:
    lo, hi = r.get(f"{key}_range", [None, None])
    if len(r.get("seeds", [])) > 1 and lo is not None:
        return f"{r[key]:.{nd}f} ({lo:.{nd}f}–{hi:.{nd}f})"
    return _f(r.get(key), nd)


READING = ("<!-- reading -->", "<!-- /reading -->")


def kept_reading(path: Path) -> str:
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(READING[0]), text.find(READING[1])
    return text[start:end + len(READING[1])] if 0 <= start < end else ""


def markdown(r: dict[str, Any], reading: str) -> str:
    quick = r["mode"] == "quick"
    seeds = ", ".join(map(str, r["seeds"]))
    out = [f"# Edits that change only what was asked: caso on the toy world, model `{r['model']}` "
           f"({r['mode']} run)", ""]
    if quick:
        out += ["**Quick run: few faces, capped learning. Not the measurement.**", ""]
    if reading:
        out += [reading, ""]
    out += [f"{r['n_edit']} held-out test faces (seed {EDIT_SEED}; add: the faces without the attribute, remove: the "
            f"faces with it), {r['steps']}-step DDIM grids; caso learned from seeds {seeds} (mean, range over seeds "
            "in brackets). Success: the oracle reads the target class. Kept: every other attribute reads as before. "
            "CF PSNR / SSIM: the edit against the true counterfactual (the same face drawn with only the edited "
            "attribute changed; higher is closer). Ladder: w in " + ", ".join(f"{w:g}" for w in LADDER)
            + "; starts " + ", ".join(f"{s:g}" for s in r["starts"]) + " (SEGA: warm-up steps (1 - start) x steps; "
            "LEDITS++: skip " + ", ".join(f"{ledits_skip(v):g}" for v in r["starts"]) + ")."
            + " Methods: " + "; ".join(f"`{m}` {METHOD_NOTES[m]}" for m in r.get("methods", []) if m in METHOD_NOTES)
            + ".", ""]
    out += defaults_table(r)
    out += one_setting_table(r) + [""]
    out += time_table(r)
    if not r["chosen"]:
        return "\n".join(out + matched_section(r))
    out += ["## The pre-chosen setting against the targets", "",
            f"caso --hold (vectors learned together), one guidance form and setting per direction, chosen on "
            f"{r['n_val']} validation faces (seed {VAL_SEED}, learning seed {r['seeds'][0]}) before the test faces "
            "were edited: " + "; ".join(f"{d}: {c['form']} form, w {c['w']:g}, start {c['start']:g}"
                                        for d, c in r["chosen"].items()) + ".", "",
            "| attribute | direction | success | kept | CF PSNR | CF SSIM | target |", "|---|---|---|---|---|---|---|"]
    for row in r["at_chosen"]:
        goal = "success ≥ 0.90, kept ≥ " + ("0.95" if row["direction"] == "add" else "0.90")
        out.append(f"| {row['attr']} | {row['direction']} | {_rng(row, 'success')} | {_rng(row, 'kept')} | "
                   f"{_rng(row, 'cf_psnr', 1)} | {_rng(row, 'cf_ssim', 3)} | {goal} |")
    if r.get("together_form"):  # recorded by reports made while LearnConfig.together_form existed
        out[out.index("## The pre-chosen setting against the targets") + 2] += (
            f" The vectors learned together were trained with the {r['together_form']} form (docs/learning.md).")
    return "\n".join(out + matched_section(r))


def time_table(r: dict[str, Any]) -> list[str]:
    """Seconds per edited face of each method (the edit after the shared inversion; LEDITS++ without its own
    inversion), at the run's thread count, as ratios to the fastest caso form."""
    per: dict[str, list[float]] = {}
    for x in r["rows"]:
        if x["method"] != "reference" and x.get("seconds") and x.get("n"):
            per.setdefault(x["method"], []).append(x["seconds"] / x["n"])
    if not per:
        return []
    mean = {m: float(np.mean(v)) for m, v in per.items()}
    base = min((v for m, v in mean.items() if m.startswith("caso")), default=min(mean.values()))
    out = [f"## Time per edited face ({r['steps']}-step edits, {r['threads']} threads)", "",
           "| method | seconds per face | × the fastest caso form |", "|---|---|---|"]
    out += [f"| {m} | {v:.3f} | {v / base:.1f} |" for m, v in sorted(mean.items(), key=lambda kv: kv[1])]
    return out + [""]


def defaults_table(r: dict[str, Any]) -> list[str]:
    """Each method at the command line's defaults (w 5, start 0.6), where the ladder has them."""
    rows = [x for x in mean_rows(r["rows"]) if x["w"] == DEFAULT_W and x["start"] == DEFAULT_START]
    if not rows:
        return []
    out = [f"## At the command line's defaults (w {DEFAULT_W:g}, start {DEFAULT_START:g})", "",
           "| attribute | direction | method | success | kept | CF PSNR |", "|---|---|---|---|---|---|"]
    for attr in EDITED:
        for direction in ("add", "remove"):
            for x in rows:
                if (x["attr"], x["direction"]) == (attr, direction):
                    out.append(f"| {attr} | {direction} | {x['method']} | {_rng(x, 'success')} | {_rng(x, 'kept')} | "
                               f"{_rng(x, 'cf_psnr', 1)} |")
    return out + [""]


def one_setting(means: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, the one (start, w) for every attribute and direction (what a default can be): among the settings
    whose mean success reaches TARGET in every direction, the highest mean kept; else the highest lowest success."""
    out = []
    for method in dict.fromkeys(r["method"] for r in means):
        rs = [r for r in means if r["method"] == method]
        cells = {(r["attr"], r["direction"]) for r in rs}
        scored = []
        for setting in sorted({(r["start"], r["w"]) for r in rs}):
            sel = [r for r in rs if (r["start"], r["w"]) == setting]
            if {(r["attr"], r["direction"]) for r in sel} != cells:
                continue
            low = min(r["success"] for r in sel)
            kept = float(np.mean([r["kept"] for r in sel]))
            scored.append(((low >= TARGET, kept if low >= TARGET else low), setting, low, kept,
                           min(r["kept"] for r in sel)))
        if scored:
            key, (start, w), low, kept, worst = max(scored)
            out.append({"method": method, "start": start, "w": w, "reached": key[0], "min_success": low,
                        "mean_kept": kept, "min_kept": worst})
    return out


def one_setting_table(r: dict[str, Any]) -> list[str]:
    out = ["", "## One setting for every attribute and direction (what a default can be; chosen on these faces)", "",
           "| method | start | w | success ≥ 0.90 everywhere | lowest success | mean kept | lowest kept |",
           "|---|---|---|---|---|---|---|"]
    for x in one_setting(mean_rows(r["rows"])):
        out.append(f"| {x['method']} | {x['start']:g} | {x['w']:g} | {'yes' if x['reached'] else 'no'} | "
                   f"{x['min_success']:.2f} | {x['mean_kept']:.2f} | {x['min_kept']:.2f} |")
    return out


def matched_section(r: dict[str, Any]) -> list[str]:
    seeds = ", ".join(map(str, r["seeds"]))
    out = ["", f"## Every method at equal success ({TARGET:.0%}): the best setting of each on the test faces", "",
            "Best kept among the settings whose (mean) success reaches the target; the ceiling uses information no "
            "user has (the oracle's reading of every attribute). Reference: the input itself against the "
            "counterfactual (do nothing) and the VAE reconstruction of the counterfactual (the best an edit through "
            "this VAE can be).", "",
            "| attribute | direction | method | success | kept | CF PSNR | CF SSIM | setting |",
            "|---|---|---|---|---|---|---|---|"]
    refs = {(x["attr"], x["direction"]): x for x in r["rows"] if x["method"] == "reference"}
    for attr in EDITED:
        for direction in ("add", "remove"):
            for m in r["matched"]:
                if (m["attr"], m["direction"]) != (attr, direction):
                    continue
                b = m["best"]
                if b is None:
                    out.append(f"| {attr} | {direction} | {m['method']} | max {m['max_success']:.2f} | not reached "
                               "| — | — | — |")
                    continue
                out.append(f"| {attr} | {direction} | {m['method']} | {_rng(b, 'success')} | {_rng(b, 'kept')} | "
                           f"{_rng(b, 'cf_psnr', 1)} | {_rng(b, 'cf_ssim', 3)} | w {b['w']:g}, start {b['start']:g} |")
            ref = refs.get((attr, direction))
            if ref:
                out.append(f"| {attr} | {direction} | *do nothing / VAE(counterfactual)* | | | {ref['input_psnr']:.1f}"
                           f" / {ref['vae_psnr']:.1f} | {ref['input_ssim']:.3f} / {ref['vae_ssim']:.3f} | |")
    if r.get("forms"):
        out += ["", "## Guidance forms of --hold (validation faces, learning seed " + str(r["forms"]["seed"]) + ")",
                "",
                "Best kept at success ≥ 0.90, per form and direction, mean over the attributes (attributes "
                "that never reach 0.90 count as not reached).", "",
                "| form | vectors | direction | reached (attributes) | mean kept at target | mean max success |",
                "|---|---|---|---|---|---|"]
        for f in r["forms"]["table"]:
            out.append(f"| {f['form']} | {f['vectors']} | {f['direction']} | {f['reached']}/{len(EDITED)} | "
                       f"{_f(f['kept'])} | {_f(f['max_success'])} |")
    out += ["", "## Success against kept: every setting and each method's front", "",
            f"![fronts]({r['figures']['front']})",
            "", "## Pictures (each method at its matched setting; caso --hold at the pre-chosen one)", "",
            f"![edits]({r['figures']['edits']})", "", "## How to rerun", "", f"    {r['command']}", "",
            f"Seeds: classifier data {CLASSIFIER_SEED}, training faces {TRAIN_SEED}, test faces {EDIT_SEED}, "
            f"validation faces {VAL_SEED}, LEDITS++ inversion noise {LEDITS_SEED}, learning {seeds}; "
            f"learning at {r['learn_threads']} CPU thread(s), torch {r['torch']} (the thread count changes learned "
            "bits; edits only in rare one-level pixel steps). Raw rows: the "
            f".json next to this file. Took {r['seconds']} s.", ""]
    return out


def forms_table(val_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (method, vectors) in (("caso --hold", "together"), ("caso --hold (separately learned)", "separately")):
        for form in sorted({r["form"] for r in val_rows if r["method"] == method}):
            for direction in ("add", "remove"):
                kept, maxs, reached = [], [], 0
                for attr in EDITED:
                    rs = [r for r in val_rows if (r["method"], r["form"], r["attr"], r["direction"])
                          == (method, form, attr, direction)]
                    if not rs:
                        continue
                    hits = [x["kept"] for x in rs if x["success"] >= TARGET]
                    maxs.append(max(x["success"] for x in rs))
                    if hits:
                        reached += 1
                        kept.append(max(hits))
                out.append({"form": form, "vectors": vectors, "direction": direction, "reached": reached,
                            "kept": float(np.mean(kept)) if kept else None,
                            "max_success": float(np.mean(maxs)) if maxs else None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="markdown report (raw rows go next to it as .json)")
    ap.add_argument("--quick", action="store_true", help="few faces, capped learning, no SEGA or LEDITS++")
    ap.add_argument("--seeds", default="0,1,2", help="learning seeds (at least 3 for a measurement)")
    ap.add_argument("--n-edit", type=int, default=64, help="test faces (each direction edits those it applies to)")
    ap.add_argument("--n-val", type=int, default=48, help="validation faces that choose caso --hold's setting")
    ap.add_argument("--methods", help="comma-separated methods (default: " + ", ".join(DEFAULT_METHODS) + ")")
    ap.add_argument("--forms", action="store_true", help="also compare the --hold forms on the validation faces")
    ap.add_argument("--starts", default=",".join(f"{s:g}" for s in STARTS), help="edit starts, comma-separated")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of every edit")
    ap.add_argument("--ladder", help="replace the shared ladder (comma-separated; for smoke runs, not measurements)")
    ap.add_argument("--phase", choices=("all", "learn", "edit", "report"), default="all",
                    help="run one part (two processes can share the work: learn --part i/2, edit --direction)")
    ap.add_argument("--part", default="0/1", help="learn phase: this process's share of the runs, i/n")
    ap.add_argument("--direction", choices=("add", "remove"), help="edit phase: only this direction")
    ap.add_argument("--work", type=Path, default=Path("/tmp/caso-claims"), help="cache of classifiers, vectors and "
                                                                                 "edit rows")
    ap.add_argument("--model", default="toy", help="the toy model measured: toy (the second world) or toy-v1")
    ap.add_argument("--attrs", default=",".join(EDITED), help="the attributes edited, comma-separated (the second "
                                                            "world adds skin and eyes)")
    ap.add_argument("--t-train", choices=("201", "auto"), default="201",
                    help="t* of the caso arms: LearnConfig's 201, or auto (embed learn's default screen)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for editing (learning runs at "
                                                           f"{LEARN_THREADS}: the count changes learned bits)")
    args = ap.parse_args(argv)
    threads = pin_threads(args.threads)
    t_start = time.monotonic()
    quick = args.quick
    steps = 10 if quick else args.steps
    STARTS[:] = [float(x) for x in args.starts.split(",")]
    global LADDER
    if args.ladder:
        LADDER = tuple(float(x) for x in args.ladder.split(","))
    RUN["methods"] = [m.strip() for m in args.methods.split(",")] if args.methods else list(DEFAULT_METHODS)
    unknown = [m for m in RUN["methods"] if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    if quick:
        RUN["methods"] = [m for m in RUN["methods"] if m not in ("sega", "ledits++")]
    n_edit, n_val = (12, 12) if quick else (args.n_edit, args.n_val)
    seeds_list = [int(s) for s in args.seeds.split(",")]
    EDITED[:] = [a.strip() for a in args.attrs.split(",")]
    GRAMMAR[0] = C.for_model(args.model) or C.DEFAULT
    T_AUTO[0] = args.t_train == "auto"
    FIRST_SEED[:] = seeds_list[:1]
    args.work.mkdir(parents=True, exist_ok=True)
    sd = load_model(args.model, cpu_runtime())
    clfs = classifiers(args.work, 600 if quick else 2000)
    learn_steps = 60 if quick else None
    if args.phase == "learn":  # this process's share of the runs; the others come from the cache
        i, n = (int(v) for v in args.part.split("/"))
        jobs = learn_jobs(seeds_list)
        mine = set(jobs[i::n])
        for seed in seeds_list:
            learned(sd, clfs, args.work, seed, learn_steps, mine)
        return 0
    seeds = {s: learned(sd, clfs, args.work, s, learn_steps) for s in seeds_list}
    pipes = B.load_pipelines(local_model_dir(args.model))
    directions = (args.direction,) if args.direction else ("add", "remove")
    part = args.work / f"rows-{'-'.join(directions)}.json"

    if args.phase in ("all", "edit"):
        # 1. caso --hold with vectors learned together (when asked): the validation faces choose its guidance form
        # and setting per direction (seed 0's vectors); --forms also measures --hold with vectors learned separately
        chosen: dict[str, Any] = {}
        val_rows: list[dict[str, Any]] = []
        if "caso --hold" in RUN["methods"]:
            val = Faces.make(sd, n_val, VAL_SEED, steps, clfs)
            first = {seeds_list[0]: seeds[seeds_list[0]]}
            val_rows = sweep(sd, pipes, ["caso --hold"], val, EDITED, steps, first, clfs, FORMS, counterfactual=False,
                             ladder=VAL_LADDER)
            chosen = choose_settings(mean_rows(val_rows), "caso --hold")
            log(chosen=chosen)
            if args.forms:
                val_rows += sweep(sd, pipes, [SEPARATE], val, EDITED, steps, first, clfs, FORMS,
                                  counterfactual=False, ladder=FORM_LADDER)
        # 2. every method over the ladder on the test faces
        test = Faces.make(sd, n_edit, EDIT_SEED, steps, clfs)
        rows = []
        for attr in EDITED:  # the rows so far are written after each attribute
            rows += sweep(sd, pipes, RUN["methods"], test, (attr,), steps, seeds, clfs,
                          form_for={d: c["form"] for d, c in chosen.items()}, directions=directions)
            part.write_text(json.dumps({"rows": rows, "validation_rows": val_rows, "chosen": chosen,
                                        "seconds": round(time.monotonic() - t_start, 1)}, default=str))
        if args.phase == "edit":
            return 0

    parts = [json.loads(p.read_text()) for p in sorted(args.work.glob("rows-*.json"))] \
        if args.phase == "report" else [json.loads(part.read_text())]
    rows = [r for p in parts for r in p["rows"]]
    val_rows = [r for p in parts for r in p["validation_rows"]]
    chosen = next((p["chosen"] for p in parts if p["chosen"]), {})
    means = mean_rows(rows)
    key = ("form", "start", "w")
    at_chosen = [r for r in means if r["method"] == "caso --hold" and chosen
                 and tuple(r[k] for k in key) == tuple(chosen[r["direction"]][k] for k in key)]
    best = matched(means)
    test = Faces.make(sd, n_edit, EDIT_SEED, steps, clfs)

    img = args.out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    figures = {kind: f"img/{args.out.stem}-{kind}.png" for kind in ("front", "edits")}  # one pair per report
    front_figure(means, args.out.parent / figures["front"])
    pictures(sd, pipes, test, chosen, best, seeds, clfs, steps, args.out.parent / figures["edits"])
    report = {"mode": "quick" if quick else "full", "model": args.model, "figures": figures,
              "t_train": args.t_train,
              "attrs": list(EDITED), "steps": steps, "n_edit": n_edit, "n_val": n_val,
              "seeds": seeds_list, "ladder": LADDER, "methods": RUN["methods"],
              "starts": STARTS, "chosen": chosen,
              "at_chosen": sorted(at_chosen, key=lambda r: (EDITED.index(r["attr"]), r["direction"])),
              "matched": best, "forms": {"seed": seeds_list[0], "table": forms_table(val_rows)} if val_rows else {},
              "learn_config": dataclasses.asdict(LearnConfig()),
              "rows": rows, "validation_rows": val_rows,
              "threads": threads, "learn_threads": LEARN_THREADS, "torch": torch.__version__,
              "seconds": round(time.monotonic() - t_start, 1) + sum(p["seconds"] for p in parts),
              "command": "python bench/claims.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    args.out.write_text(markdown(report, kept_reading(args.out)))
    log(done=str(args.out), seconds=report["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
