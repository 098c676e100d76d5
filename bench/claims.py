"""The paper's claims on the toy world, against prompt editing, SEGA and LEDITS++ (issue 6, items 3-4).

    python bench/claims.py --out docs/results.md           # full run (long on 2 CPU cores)
    python bench/claims.py --quick --out /tmp/results.md   # small grids and few faces: a smoke run

Writes a markdown report (``--out``), its raw numbers (same name, ``.json``) and before/after
pictures (``img/`` next to the report). Every number is read by the toy oracle; all random
numbers are seeded (seeds listed in the report). CASO's embeddings are learned with
``LearnConfig()`` defaults (``--quick`` caps the number of learning steps, and says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caso_cli.config import EditConfig, LearnConfig
from caso_cli.models.loaders import load_model, toy_model_dir
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import class_conditions, decode_latents, encode_images
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.runtime import cpu_runtime
from caso_cli.toyworld import baselines as B
from caso_cli.toyworld import measure, oracle
from caso_cli.toyworld.quality import psnr
from caso_cli.toyworld.render import render_faces
from caso_cli.toyworld.sample import labelled_grid

sys.path.insert(0, str(Path(__file__).parent))
from learning_sweep import CLASSIFIER_SEED, GEN_SEED, TRAIN_SEED, fit_toy_classifier  # noqa: E402

EDIT_SEED, FEATURE_SEED, LEDITS_SEED = 910, 920, 0
ATTR, SECOND = "mustache", "glasses"
TARGET = 0.9  # edit success at which methods are compared
MODES = {
    "quick": {"n_edit": 8, "steps": 20, "n_gen": 8, "n_clf": 600, "learn_steps": 60, "n_feat": 64,
              "caso": {"scale": (3.0, 7.0), "start": (0.6, 1.0)}, "grids": B.QUICK_GRIDS},
    "full": {"n_edit": 64, "steps": 50, "n_gen": 32, "n_clf": 2000, "learn_steps": None, "n_feat": 256,
             "caso": {"scale": (1.0, 2.0, 3.0, 5.0, 7.0), "start": (0.4, 0.6, 0.8, 1.0)},
             "grids": {"prompt": B.PROMPT_GRID, "sega": B.SEGA_GRID, "ledits": B.LEDITS_GRID}},
}


def log(**kw: Any) -> None:
    print(json.dumps(kw, default=str), file=sys.stderr, flush=True)


def learn(sd: Any, clf: Any, images: np.ndarray, steps: int | None) -> torch.Tensor:
    """CASO vectors with LearnConfig() defaults (``steps`` only overrides the step count in quick mode)."""
    cfg = LearnConfig(checkpoint_every=0)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    return learn_embedding(sd, clf, measure.to_unit(images), cfg).vectors


def edit_with(sd: Any, pipes: tuple[Any, Any], method: str, direction: str, params: dict[str, Any],
              faces: np.ndarray, steps: int, caso: tuple[torch.Tensor, list[str]]) -> np.ndarray:
    """uint8 edits of ``faces`` by one method at one setting (the same code paths as the sweeps)."""
    sega, ledits = pipes
    reverse = direction == "remove"
    z0 = encode_images(sd, measure.to_unit(faces))
    prompt = B.attribute_prompt(ATTR)
    if method in ("caso", "prompt"):
        cfg = EditConfig(steps=steps, start=params["start"])
        z_t = invert_latents(sd, z0, cfg)
        w = -params["scale"] if reverse else params["scale"]
        if method == "prompt":
            z = B.prompt_edit(sd, z_t, prompt, w, cfg)
        else:
            vectors, classes = caso
            cond = class_conditions(sd, vectors)[classes.index(ATTR)][None]
            z = edit_latents(sd, z_t, cond, w, cfg)
    elif method == "sega":
        z_T = invert_latents(sd, z0, EditConfig(steps=steps, start=1.0))
        z = B.sega_edit(sega, z_T, prompt, steps, reverse=reverse, **params)
    else:
        rest = {k: v for k, v in params.items() if k != "skip"}
        B.ledits_invert(ledits, faces, steps, params["skip"], LEDITS_SEED)
        z = B.ledits_edit(ledits, prompt, reverse=reverse, **rest)
    return measure.to_uint8(decode_latents(sd, z))


def chosen(cmp: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The matched setting, or (not reached) the setting with the highest success, then preservation."""
    if cmp["reached"]:
        return cmp["best"], f"best kept at success >= {TARGET}"
    top = max(rows, key=lambda r: (r["success"], r["kept"]))
    return top["params"], "not reached: highest success"


def class_means(clf: Any, n: int) -> dict[int, np.ndarray]:
    faces, _ = render_faces(n, FEATURE_SEED)
    have = getattr(oracle.read_attributes(faces), ATTR)
    f = features(clf, faces)
    return {v: f[have == v].mean(0) for v in (0, 1)}


def features(clf: Any, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return clf.features(measure.to_unit(images)).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few faces, small grids, capped learning steps")
    ap.add_argument("--out", type=Path, required=True, help="markdown report (raw numbers go next to it as .json)")
    ap.add_argument("--model", default="toy", help="the toy model (default) or another folder of it")
    ap.add_argument("--n-edit", type=int, help="held-out faces to edit (default: 64, quick 8)")
    args = ap.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    if args.n_edit:
        mode = {**mode, "n_edit": args.n_edit}
    torch.manual_seed(0)
    t_start = time.monotonic()
    steps = mode["steps"]
    sd = load_model(args.model, cpu_runtime())
    pipes = B.load_pipelines(toy_model_dir() if args.model == "toy" else args.model)
    work = Path(tempfile.mkdtemp(prefix="caso-claims-"))
    train, _ = render_faces(200, TRAIN_SEED)
    faces, _ = render_faces(mode["n_edit"], EDIT_SEED)
    report: dict[str, Any] = {"mode": "quick" if args.quick else "full", "steps": steps, "target": TARGET,
                              "n_edit": mode["n_edit"], "learn_steps": mode["learn_steps"] or "LearnConfig() default",
                              "learn_config": {k: v for k, v in dataclasses.asdict(LearnConfig()).items()}}

    clfs, emb = {}, {}
    for attr in (ATTR, SECOND):
        clfs[attr], fit = fit_toy_classifier(attr, work, mode["n_clf"])
        t0 = time.monotonic()
        emb[attr] = (learn(sd, clfs[attr], train, mode["learn_steps"]), clfs[attr].classes)
        log(learned=attr, classifier_val_accuracy=fit.val_accuracy, seconds=round(time.monotonic() - t0, 1))
    vm, cm = emb[ATTR]

    # 1. curves and preservation at equal success
    rows = B.caso_curve(sd, vm, cm, ATTR, faces, mode["caso"]["scale"], mode["caso"]["start"], steps)
    log(done="caso curve", rows=len(rows))
    g = mode["grids"]
    rows += B.sweep_prompt(sd, faces, ATTR, g["prompt"], steps)
    log(done="prompt sweep")
    rows += B.sweep_sega(sd, pipes[0], faces, ATTR, g["sega"], steps)
    log(done="sega sweep")
    rows += B.sweep_ledits(sd, pipes[1], faces, ATTR, g["ledits"], steps, LEDITS_SEED)
    log(done="ledits sweep")
    report["curves"] = rows
    report["matched"] = B.compare(rows, TARGET)

    # 2. pictures and classifier features at each method's matched setting
    have = getattr(oracle.read_attributes(faces), ATTR)
    means = class_means(clfs[ATTR], mode["n_feat"])
    img_dir = args.out.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    report["features"], report["pictures"] = [], {}
    for direction, target in (("add", 1), ("remove", 0)):
        todo = have != target
        if not todo.any():
            continue
        sub = faces[todo]
        tiles, labels = [sub[:6]], ["input"]
        f_in = features(clfs[ATTR], sub)
        report["features"].append({"method": "input", "direction": direction, **distances(f_in, means, target)})
        for cmp in report["matched"]:
            if cmp["direction"] != direction:
                continue
            mrows = [r for r in rows if (r["method"], r["direction"]) == (cmp["method"], direction)]
            params, why = chosen(cmp, mrows)
            x = edit_with(sd, pipes, cmp["method"], direction, params, sub, steps, emb[ATTR])
            tiles.append(x[:6])
            labels.append(f"{cmp['method']} {json.dumps(params)}"[:90])
            report["features"].append({"method": cmp["method"], "direction": direction, "setting": why,
                                       **distances(features(clfs[ATTR], x), means, target)})
        name = f"claims-{direction}.png"
        labelled_grid(np.concatenate(tiles), labels, min(6, len(sub))).save(img_dir / name)
        report["pictures"][direction] = f"img/{name}"
    log(done="pictures and features")

    # 3. order invariance, reconstruction, generation, 20 vs 200 training images
    cfg = EditConfig(steps=steps)
    vg, cg = emb[SECOND]
    report["order"] = measure.order_invariance(sd, (ATTR, vm[cm.index(ATTR)]), (SECOND, vg[cg.index(SECOND)]),
                                               faces, 5.0, cfg)
    report["reconstruction"] = {}
    for refine, what in ((1, "caso's refined inversion"), (0, "plain DDIM inversion (the paper's)")):
        rec = measure.guided_reconstruction(sd, vm, cm, ATTR, faces, 2.0,
                                            EditConfig(steps=steps, start=1.0, inversion_refine=refine))
        report["reconstruction"].update({f"{k}, {what}": v for k, v in rec.items()})
    B.ledits_invert(pipes[1], faces, steps, 0.15, LEDITS_SEED)
    plain = measure.to_uint8(decode_latents(sd, pipes[1](output_type="latent", use_intersect_mask=False).images))
    report["reconstruction"]["LEDITS++ inversion, no edit (skip 0.15)"] = {
        "kept_all": float(np.mean(measure.others_kept(oracle.read_attributes(faces), oracle.read_attributes(plain),
                                                      ATTR) & (getattr(oracle.read_attributes(plain), ATTR) == have))),
        "psnr": round(psnr(faces, plain), 2)}
    report["generation"] = measure.generation_accuracy(sd, vm, cm, ATTR, mode["n_gen"], GEN_SEED, 5.0, steps)
    v20 = learn(sd, clfs[ATTR], train[:20], mode["learn_steps"])
    report["n_train"] = {}
    for n, vec in ((20, v20), (200, vm)):
        r = measure.edit_rates(sd, vec, cm, ATTR, faces, 5.0, cfg)
        report["n_train"][n] = {"generation": measure.generation_accuracy(sd, vec, cm, ATTR, mode["n_gen"], GEN_SEED,
                                                                          5.0, steps),
                                "add": r.get(ATTR), "remove": r.get(f"-{ATTR}")}
    report["lpips"] = {"available": False, "reason": "this run had no VGG16 weights (caso eval --weights computes "
                                                     "LPIPS from yours)"}
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["command"] = "python bench/claims.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    args.out.write_text(markdown(report, kept_reading(args.out)))
    log(done=str(args.out), seconds=report["seconds"])
    return 0


def distances(f: np.ndarray, means: dict[int, np.ndarray], target: int) -> dict[str, float]:
    """Mean Euclidean distance of features to the target and source class means; share nearer the target."""
    dt = np.linalg.norm(f - means[target], axis=1)
    ds = np.linalg.norm(f - means[1 - target], axis=1)
    return {"to_target": round(float(dt.mean()), 3), "to_source": round(float(ds.mean()), 3),
            "nearer_target": round(float((dt < ds).mean()), 3)}


def _f(v: Any, nd: int = 2) -> str:
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


READING = ("<!-- reading -->", "<!-- /reading -->")


def kept_reading(path: Path) -> str:
    """The hand-written reading of an earlier report at ``path`` (between the READING markers), to carry over."""
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(READING[0]), text.find(READING[1])
    return text[start:end + len(READING[1])] if 0 <= start < end else ""


def markdown(r: dict[str, Any], reading: str = "") -> str:
    quick = r["mode"] == "quick"
    out = [f"# CASO on the toy world: the paper's claims and three baselines ({r['mode']} run)", ""]
    if quick:
        out += ["**Quick run: few faces, small grids, capped learning steps. Not the measurement.**", ""]
    if reading:
        out += [reading, ""]
    out += [f"{r['n_edit']} held-out faces, {r['steps']}-step DDIM grids, attribute `{ATTR}`; every number is "
            "read by the toy oracle. Success: the oracle reads the target class, among faces not already in it. "
            "Kept: every other attribute reads as before. PSNR: edit vs input (dB).", "",
            f"## Preservation at equal edit success ({TARGET:.0%})", "",
            f"LPIPS: unavailable ({r['lpips']['reason']}).", "",
            "| method | direction | settings | max success | kept (best setting, success >= target) "
            "| kept (interpolated on the front) | PSNR of that setting | setting |",
            "|---|---|---|---|---|---|---|---|"]
    for m in r["matched"]:
        n = sum(1 for c in r["curves"] if (c["method"], c["direction"]) == (m["method"], m["direction"]))
        if m["reached"]:
            out.append(f"| {m['method']} | {m['direction']} | {n} | {_f(m['max_success'])} | {_f(m['best_kept'])} | "
                       f"{_f(m['interpolated'])} | {_f(m['best_psnr'], 1)} | `{json.dumps(m['best'])}` |")
        else:
            out.append(f"| {m['method']} | {m['direction']} | {n} | {_f(m['max_success'])} | not reached | "
                       "not reached | — | — |")
    out += ["", "Removal: caso and prompt editing guide at -w with the positive class / the prompt "
            f"\"{B.attribute_prompt(ATTR)}\"; SEGA and LEDITS++ use `reverse_editing_direction=True` on that prompt.",
            "", "## Pictures (each method at its matched setting; not reached: its highest-success setting)", ""]
    for d, p in r["pictures"].items():
        out += [f"{d}: ![{d}]({p})", ""]
    out += ["## Classifier features of edits vs class means of real faces", "",
            "| method | direction | to target mean | to source mean | nearer target |", "|---|---|---|---|---|"]
    for f in r["features"]:
        out.append(f"| {f['method']} | {f['direction']} | {f['to_target']} | {f['to_source']} "
                   f"| {f['nearer_target']} |")
    o = r["order"]
    out += ["", "## Two-attribute order invariance (mustache + glasses tokens, both orders, w 5)", "",
            f"Pixels differing: {o['pixels_differing_any']:.4f} (any), {o['pixels_differing_gt4']:.4f} (> 4 levels); "
            f"oracle readings identical on {o['oracle_same_all']:.2f} of faces; both added (a-b order): "
            f"{o['both_added_ab']:.2f}.", "", "## Reconstruction (full inversion)", "",
            "| variant | all attributes kept | PSNR |", "|---|---|---|"]
    for k, v in r["reconstruction"].items():
        out.append(f"| {k} | {v['kept_all']:.2f} | {v['psnr']} |")
    out += ["", "## Guided generation: class accuracy (oracle), CFG 5", "",
            ", ".join(f"{k}: {v:.2f}" for k, v in r["generation"].items()), "",
            "## 20 vs 200 training images (edit w 5, start 0.6)", "",
            "| images | generation | add success / kept | remove success / kept |", "|---|---|---|---|"]
    for n, v in r["n_train"].items():
        a, m = v["add"] or {}, v["remove"] or {}
        out.append(f"| {n} | " + ", ".join(f"{k} {x:.2f}" for k, x in v["generation"].items())
                   + f" | {_f(a.get('success'))} / {_f(a.get('kept'))} "
                   f"| {_f(m.get('success'))} / {_f(m.get('kept'))} |")
    out += ["", "## How to rerun", "", f"    {r['command']}", "",
            f"Seeds: classifier data {CLASSIFIER_SEED}, training faces {TRAIN_SEED}, edited faces {EDIT_SEED}, "
            f"generation {GEN_SEED}, feature means {FEATURE_SEED}, LEDITS++ inversion noise {LEDITS_SEED}, "
            f"torch 0. Learning: LearnConfig() defaults; steps: {r['learn_steps']}"
            f"{' (capped for --quick)' if quick else ''}. Raw curves: the .json next to this "
            f"file. Took {r['seconds']} s.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
