"""Measure the shipped toy model (or any toy-world diffusers folder) with the pixel oracle.

    python bench/toyworld_quality.py [--model toy] [--json out.json] [--grid docs/img/toy_samples.png]

Prints one JSON object: (a) VAE reconstruction, (b) prompted text-to-image samples,
(c) null-prompt DDIM inversion + reconstruction, (d) the prompt-editing baseline (inversion +
guidance with "a face with a mustache" at a few scales), (e) every phrasing of the model's caption grammar,
targets, wall times. See
:mod:`caso_cli.toyworld.quality` for the definitions and docs/toyworld-model.md for results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

GRID_PROMPTS = [
    "a face with glasses",
    "a face with a mustache",
    "a face with a smile",
    "a face with no smile and no glasses",
    "a face with black hair",
    "a face with blond hair",
    "a face with red hair",
    "a face with a mustache and glasses and a smile and red hair",
    "",
]


def save_grid(sd: object, path: Path, seed: int = 7, per_row: int = 8, steps: int = 50, scale: float = 5.0) -> None:
    from caso_cli.toyworld.sample import labelled_grid, sample

    prompts = [p for p in GRID_PROMPTS for _ in range(per_row)]
    images = sample(sd, prompts, seed, steps, scale)
    labels = [repr(p) if p else "'' (unconditional)" for p in GRID_PROMPTS]
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, labels, per_row, scale=3).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--model", default="toy")
    p.add_argument("--n-vae", type=int, default=512)
    p.add_argument("--n-prompt", type=int, default=48, help="samples per prompt for (b)")
    p.add_argument("--n-inv", type=int, default=128)
    p.add_argument("--n-edit", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scale", type=float, default=5.0, help="CFG scale for (b)")
    p.add_argument("--edit-scales", default="1,3,5,10")
    p.add_argument("--parts", default="abcde", help="which measurements to run")
    p.add_argument("--n-language", type=int, default=16, help="samples per prompt for (e)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--grid", type=Path, default=None, help="save a labelled sample grid PNG here")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime
    from caso_cli.toyworld import quality as Q

    sd = load_model(args.model, cpu_runtime())
    out: dict[str, object] = {"model": args.model, "targets": Q.TARGETS, "seconds": {}}
    secs: dict[str, float] = out["seconds"]  # type: ignore[assignment]

    def timed(key: str, fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        t0 = time.time()
        res = fn(*a, **k)
        secs[key] = round(time.time() - t0, 1)
        print(f"{key}: {json.dumps(res)}", file=sys.stderr)
        return res

    if "a" in args.parts:
        out["a_vae"] = timed("a_vae", Q.vae_quality, sd, n=args.n_vae)
    if "b" in args.parts:
        out["b_prompts"] = timed("b_prompts", Q.prompt_quality, sd, n_per_prompt=args.n_prompt, steps=args.steps,
                                 scale=args.scale)
    if "c" in args.parts:
        out["c_inversion"] = timed("c_inversion", Q.inversion_quality, sd, n=args.n_inv, steps=args.steps)
        out["c_inversion_plain"] = timed("c_inversion_plain", Q.inversion_quality, sd, n=args.n_inv,
                                         steps=args.steps, refine=0)
    if "d" in args.parts:
        scales = tuple(float(s) for s in args.edit_scales.split(","))
        out["d_prompt_edit"] = timed("d_prompt_edit", Q.prompt_edit_baseline, sd, n=args.n_edit, steps=args.steps,
                                     scales=scales)
    if "e" in args.parts:
        from caso_cli.toyworld.captions import DEFAULT, for_model

        out["e_language"] = timed("e_language", Q.language_quality, sd, for_model(args.model) or DEFAULT,
                                  n_per_prompt=args.n_language, steps=args.steps, scale=args.scale)
    if all(k in out for k in ("a_vae", "b_prompts", "c_inversion")):
        out["targets_met"] = Q.summary_ok(out["a_vae"], out["b_prompts"], out["c_inversion"])  # type: ignore[arg-type]
    if args.grid:
        timed("grid", save_grid, sd, args.grid, steps=args.steps, scale=args.scale)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
