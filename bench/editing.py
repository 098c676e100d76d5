"""The editing claims on the toy world, measured by the oracle (issue: edit / interpolate / reconstruct).

    python bench/editing.py                 # learns mustache and glasses embeddings, then measures
    python bench/editing.py --markdown docs/editing-results.md

1. success vs preservation over scale x start (add at +w, remove at -w; others kept);
2. two-attribute edits in either token order: fraction of pixels that differ;
3. single-step edits;
4. interpolation: is the oracle's raw score monotonic in the scale, per image?
5. guided vs unguided reconstruction: attributes kept, PSNR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from caso_cli.config import EditConfig, LearnConfig
from caso_cli.models.loaders import load_model
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images
from caso_cli.pipelines.guidance import cfg_guidance
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.runtime import cpu_runtime, pin_threads
from caso_cli.toyworld import measure, oracle
from caso_cli.toyworld.render import render_faces

sys.path.insert(0, str(Path(__file__).parent))
from learning_sweep import TRAIN_SEED, fit_toy_classifier  # noqa: E402

EDIT_SEED = 910


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-edit", type=int, default=64)
    ap.add_argument("--scales", default="2,3,4,6,8")
    ap.add_argument("--starts", default="0.3,0.45,0.6,0.8")
    ap.add_argument("--learn-steps", type=int, default=None, help="default: LearnConfig's steps")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--model", default="toy", help="the toy model (default) or another folder of it")
    args = ap.parse_args(argv)
    pin_threads(2)
    sd = load_model(args.model, cpu_runtime())
    work = Path(tempfile.mkdtemp(prefix="caso-edit-bench-"))
    train, _ = render_faces(200, TRAIN_SEED)
    emb = {}
    for attr in ("mustache", "glasses"):
        clf, _ = fit_toy_classifier(attr, work)
        t0 = time.monotonic()
        cfg = LearnConfig(checkpoint_every=0)
        cfg = dataclasses.replace(cfg, steps=args.learn_steps) if args.learn_steps else cfg
        res = learn_embedding(sd, clf, measure.to_unit(train), cfg)
        emb[attr] = (res.vectors, clf.classes)
        print(json.dumps({"learned": attr, "seconds": round(time.monotonic() - t0, 1)}), flush=True)
    faces, _ = render_faces(args.n_edit, EDIT_SEED)
    rows: dict[str, object] = {}

    # 1. success vs preservation
    curve = []
    for start in [float(s) for s in args.starts.split(",")]:
        for scale in [float(s) for s in args.scales.split(",")]:
            for attr, (vec, classes) in emb.items():
                r = measure.edit_rates(sd, vec, classes, attr, faces, scale, EditConfig(start=start))
                add, rem = r.get(attr, {}), r.get(f"-{attr}", {})
                row = {"attr": attr, "start": start, "scale": scale, "add": add.get("success"),
                       "add_kept": add.get("kept"), "remove": rem.get("success"), "remove_kept": rem.get("kept"),
                       "recon_kept": r["reconstruction_kept"]}
                curve.append(row)
                print(json.dumps(row), flush=True)
    rows["curve"] = curve

    # 2. order invariance of a two-attribute condition
    cfg = EditConfig()
    z_t = invert_latents(sd, encode_images(sd, measure.to_unit(faces)), cfg)
    vm, cm = emb["mustache"]
    vg, cg = emb["glasses"]
    rows["order"] = measure.order_invariance(sd, ("mustache", vm[cm.index("mustache")]),
                                             ("glasses", vg[cg.index("glasses")]), faces, 5.0, cfg)
    print(json.dumps({"order": rows["order"]}), flush=True)

    # 3. single-step edits
    single = []
    for scale in (5.0, 10.0, 20.0):
        r = measure.edit_rates(sd, vm, cm, "mustache", faces, scale, EditConfig(single_step=True))
        single.append({"scale": scale, "add": r.get("mustache", {}).get("success"),
                       "remove": r.get("-mustache", {}).get("success"), "kept": r.get("mustache", {}).get("kept")})
    rows["single_step"] = single
    print(json.dumps({"single_step": single}), flush=True)

    # 4. interpolation monotonicity of the oracle's raw mustache score
    scales = torch.linspace(-6, 6, 7)
    k = cm.index("mustache")
    with torch.no_grad():
        cond = sd.family.encode_vectors(vm[k:k + 1])
    n = min(16, len(faces))
    scores = []
    for i in range(n):
        guidance = cfg_guidance(sd, cond, scales)
        x = measure.to_uint8(decode_latents(sd, edit_latents(sd, z_t[i:i + 1].expand(7, -1, -1, -1), guidance, cfg)))
        scores.append(oracle.read_attributes(x).scores["mustache"])
    scores_arr = np.stack(scores)
    mono = np.all(np.diff(scores_arr, axis=1) >= -0.02, axis=1)
    rows["interpolation"] = {"n": n, "monotonic": float(mono.mean()), "tolerance": 0.02,
                             "mean_score_by_scale": [round(float(v), 3) for v in scores_arr.mean(0)]}
    print(json.dumps({"interpolation": rows["interpolation"]}), flush=True)

    # 5. guided vs unguided reconstruction (full inversion), guided by each face's own mustache class
    rec = measure.guided_reconstruction(sd, vm, cm, "mustache", faces, 2.0, EditConfig(start=1.0))
    rows["reconstruction"] = rec
    print(json.dumps({"reconstruction": rec}), flush=True)
    if args.markdown:
        args.markdown.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
