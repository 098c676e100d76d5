"""Sweep CASO's learning hyperparameters on the toy world, measured by the oracle.

For each setting: learn an embedding on toy renders with a fitted small-CNN classifier, then
(1) generate from noise with each class condition (CFG) and read the class with the oracle;
(2) edit held-out faces from one inversion (+w towards each class, -w with the positive
class) and read success and preservation (all other attributes unchanged).

    python bench/learning_sweep.py --attr mustache --quick      # a few settings, ~10 min on 2 CPU cores
    python bench/learning_sweep.py --attr mustache --attr hair  # the full sweep

Prints one JSON object per setting; ``--markdown FILE`` also writes a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from caso_cli.config import EditConfig, FitConfig, LearnConfig
from caso_cli.io.datasets import load_labelled
from caso_cli.models.loaders import load_model
from caso_cli.pipelines.classifier_fit import fit_classifier
from caso_cli.pipelines.learn_runs import learn_checked
from caso_cli.runtime import cpu_runtime, pin_threads
from caso_cli.toyworld import measure
from caso_cli.toyworld.render import render_faces, write_dataset

COLUMN = {"mustache": "Mustache", "glasses": "Glasses", "smile": "Smile", "hair": "Hair", "skin": "Dark_skin",
          "eyes": "Narrow_eyes"}
CLASSIFIER_SEED, TRAIN_SEED, EDIT_SEED, GEN_SEED = 500, 600, 700, 800


def fit_toy_classifier(attr: str, workdir: Path, n: int = 2000):
    data_dir = workdir / f"clf-{attr}"
    if not data_dir.exists():
        write_dataset(data_dir, n, CLASSIFIER_SEED)
    data = load_labelled(data_dir, data_dir / "list_attr_toy.txt", COLUMN[attr])
    clf, report = fit_classifier(data, FitConfig(attr=attr, batch_size=32), cpu_runtime())
    return clf, report


def settings(quick: bool) -> list[tuple[str, dict]]:
    """The defaults, then one change at a time (LearnConfig holds the measured defaults: docs/learning.md)."""
    base: list[tuple[str, dict]] = [("default", {})]
    if quick:
        return base + [("batch 8", {"batch_size": 8}), ("train scale 10", {"train_scale": 10.0}),
                       ("t* 401", {"t_train": 401}), ("lambda 3", {"lambda_rec": 3.0})]
    return base + [
        ("batch 8", {"batch_size": 8}), ("train scale 1", {"train_scale": 1.0}),
        ("train scale 10", {"train_scale": 10.0}), ("t* 401", {"t_train": 401}), ("t* 601", {"t_train": 601}),
        ("t* 201-401", {"t_train_max": 401}), ("t* 201-601", {"t_train_max": 601}),
        ("lambda 3", {"lambda_rec": 3.0}), ("lambda 10", {"lambda_rec": 10.0}),
        ("init 'face'", {"init_word": "face"}), ("steps 500", {"steps": 500}), ("steps 2000", {"steps": 2000}),
        ("lr 3e-3", {"lr": 3e-3}), ("keep 10", {"lambda_keep": 10.0}), ("keep 100", {"lambda_keep": 100.0}),
        ("keep 1000", {"lambda_keep": 1000.0}), ("augment 1", {"augment": 1}), ("augment 2", {"augment": 2}),
        ("augment 4", {"augment": 4}), ("no check", {"check_samples": 0}), ("restarts 2", {"restarts": 2}),
        ("restarts 4", {"restarts": 4}),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attr", action="append", choices=sorted(COLUMN), help="toy attribute(s) (default mustache)")
    ap.add_argument("--n-train", type=int, default=200, help="training images")
    ap.add_argument("--n-edit", type=int, default=64, help="held-out faces to edit")
    ap.add_argument("--n-gen", type=int, default=32, help="generated images per class")
    ap.add_argument("--edit-scale", type=float, default=5.0)
    ap.add_argument("--edit-start", type=float, default=0.6)
    ap.add_argument("--gen-scale", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="five settings instead of twelve")
    ap.add_argument("--no-edits", action="store_true", help="measure guided generation only")
    ap.add_argument("--only", help="run only these settings (comma-separated labels, e.g. 'default,keep 10')")
    ap.add_argument("--seeds", default="0", help="learning seeds, comma-separated: each setting runs once per seed")
    ap.add_argument("--markdown", type=Path, help="write a markdown table here")
    ap.add_argument("--model", default="toy", help="the toy model (default) or another folder of it")
    args = ap.parse_args(argv)
    pin_threads(2)
    sd = load_model(args.model, cpu_runtime())
    workdir = Path(tempfile.mkdtemp(prefix="caso-sweep-"))
    rows = []
    for attr in args.attr or ["mustache"]:
        clf, report = fit_toy_classifier(attr, workdir)
        print(json.dumps({"attr": attr, "classifier_val_accuracy": report.val_accuracy,
                          "classifier_seconds": report.seconds}), flush=True)
        train, _ = render_faces(args.n_train, TRAIN_SEED)
        edit, _ = render_faces(args.n_edit, EDIT_SEED)
        images = measure.to_unit(train)
        runs = [(label, change, int(seed)) for label, change in settings(args.quick) for seed in args.seeds.split(",")
                if not args.only or label in {part.strip() for part in args.only.split(",")}]
        for label, change, seed in runs:
            cfg = dataclasses.replace(LearnConfig(checkpoint_every=0, seed=seed), **change)
            t0 = time.monotonic()
            result = learn_checked(sd, clf, images, cfg)
            learn_s = time.monotonic() - t0
            gen = measure.generation_accuracy(sd, result.vectors, clf.classes, attr, args.n_gen, GEN_SEED,
                                              args.gen_scale)
            edits = None if args.no_edits else measure.edit_rates(sd, result.vectors, clf.classes, attr, edit,
                                                                  args.edit_scale, EditConfig(start=args.edit_start))
            row = {"attr": attr, "setting": label, "change": change, "seed": seed, "steps": result.steps,
                   "learn_s": round(learn_s, 1), **{f"train_{k}": round(v, 3) for k, v in result.summary().items()},
                   "generation": gen, "check": result.check, "edits": edits}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.markdown:
        args.markdown.write_text(markdown(rows, args))
    return 0


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Edits: scale ±{args.edit_scale}, start {args.edit_start}, {args.n_edit} held-out faces; "
             f"generation: {args.n_gen} samples per class at CFG {args.gen_scale}; {args.n_train} training images.",
             "", "| attr | setting | steps | learn s | generation (per class) | edit success (per target) "
             "| kept (per target) | recon kept |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = {k: v for k, v in (r["edits"] or {}).items() if isinstance(v, dict)}
        lines.append(
            f"| {r['attr']} | {r['setting']} (seed {r['seed']}) | {r['steps']} | {r['learn_s']} | "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["generation"].items()) + " | "
            + ", ".join(f"{k} {v['success']:.2f}" for k, v in e.items()) + " | "
            + ", ".join(f"{k} {v['kept']:.2f}" for k, v in e.items())
            + (f" | {r['edits']['reconstruction_kept']:.2f} |" if r["edits"] else " | |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
