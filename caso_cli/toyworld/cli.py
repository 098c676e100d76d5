"""The toy world's commands: ``caso demo`` and the ``caso toyworld`` group (toy faces with exactly known attributes,
their pixel oracle, the toy model).

A plug-in's commands, added through the ``caso_cli.commands`` entry point (:func:`register`, declared in
pyproject.toml) exactly as a third-party package would add its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caso_cli.cli.help import CasoTyper
from caso_cli.cli.options import JsonOpt, SeedOpt
from caso_cli.cli.output import Progress, info, plural, print_json
from caso_cli.errors import EXIT_CHECK_FAILED, InputError, OutputExists, UsageError

if TYPE_CHECKING:
    import numpy as np

app = CasoTyper(
    help="Toy world: 32x32 faces with known attributes (mustache, glasses, smile, hair colour) "
         "and an oracle that reads them back from pixels.\n\n"
         "Examples:\n\n  caso toyworld render data/toy --n 1000\n\n  caso toyworld oracle data/toy/images/000000.png",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    """The ``caso_cli.commands`` entry point: add ``caso demo`` and the ``caso toyworld`` group to ``root``."""
    root.command("demo")(demo_cmd)
    root.add_typer(app, name="toyworld")


def _parse_hair(text: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError as exc:
        raise UsageError(f"--hair-probs: expected three numbers like 1,1,1, got {text!r}") from exc
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise UsageError(f"--hair-probs: expected three non-negative weights (black,blond,red), got {text!r}")
    total = sum(weights)
    return (weights[0] / total, weights[1] / total, weights[2] / total)


@app.command("render")
def render_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory (created; must be empty or absent).")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of faces.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same faces.")] = 0,
    p_mustache: Annotated[float, typer.Option("--p-mustache", min=0.0, max=1.0, help="P(mustache).")] = 0.5,
    p_glasses: Annotated[float, typer.Option("--p-glasses", min=0.0, max=1.0, help="P(glasses).")] = 0.5,
    p_smile: Annotated[float, typer.Option("--p-smile", min=0.0, max=1.0, help="P(smile).")] = 0.5,
    hair_probs: Annotated[str, typer.Option(
        "--hair-probs", help="Relative weights of black,blond,red hair (normalised to sum to 1).")] = "1,1,1",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into a non-empty OUT, replacing the files a previous render wrote.")] = False,
    grid: Annotated[Path | None, typer.Option(
        "--grid", help="Also save a contact sheet of the first 64 faces (x4) to this PNG.")] = None,
) -> None:
    """Render N labelled toy faces into OUT like a real data set.

    Writes OUT/images/000000.png, 000001.png, ... and three label files:

    list_attr_toy.txt: CelebA layout, one 1/-1 column per attribute or hair colour.

    labels.csv: labels and nuisances (position, size, skin, background, eyes).

    toyworld.json: seed, count and sampling config. OUT is printed on stdout.

    Examples:

      caso toyworld render data/toy --n 20000 --seed 0

      caso toyworld render data/rare --n 5000 --p-mustache 0.1 --hair-probs 2,1,1
    """
    if grid is not None and grid.suffix.lower() != ".png":
        raise UsageError(f"--grid must name a .png file, got {grid}")
    from caso_cli.io.files import check_writable
    from caso_cli.toyworld import render as R

    check_writable(out, "faces")
    if grid is not None:
        check_writable(grid, "grid")
    config = R.RenderConfig(p_mustache=p_mustache, p_glasses=p_glasses, p_smile=p_smile,
                            hair_probs=_parse_hair(hair_probs))
    start = time.perf_counter()
    try:
        params = R.write_dataset(out, n, seed, config, overwrite=overwrite)
    except OutputExists as exc:  # the library speaks of overwrite=True
        raise OutputExists(f"{out}: not empty (use --overwrite to replace the files a previous render wrote)") from exc
    took = time.perf_counter() - start
    if grid is not None:
        from PIL import Image

        first = params.subset(slice(0, 64))
        grid.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(R.make_grid(R.render(first), ncol=8, scale=4)).save(grid)
    hair = " / ".join(f"{(params.hair == k).mean():.0%}" for k in range(3))
    info(f"wrote {plural(n, 'face')} to {out} in {took:.1f} s: mustache {params.mustache.mean():.0%}, "
         f"glasses {params.glasses.mean():.0%}, smile {params.smile.mean():.0%}, "
         f"hair black/blond/red {hair}, dark skin {(params.skin_tone > R.DARK_SKIN).mean():.0%}, "
         f"narrow eyes {params.eye_shape.mean():.0%}")
    typer.echo(str(out))


def _read_paths(images: list[str]) -> list[str]:
    if images == ["-"]:
        return [line.strip() for line in sys.stdin if line.strip()]
    if "-" in images:
        raise UsageError("'-' (read paths from stdin) must be the only IMAGE argument")
    return images


def _load_32(path: str) -> np.ndarray:
    """(32, 32, 3) uint8 pixels of an image file."""
    import numpy as np

    from caso_cli.io.images import load_image
    from caso_cli.toyworld.render import IMAGE_SIZE, downsample

    img = load_image(path)
    w, h = img.size
    if w != h or w % IMAGE_SIZE:
        raise InputError(f"{path}: the toy-world oracle reads {IMAGE_SIZE}x{IMAGE_SIZE} images "
                         f"(or square multiples such as {4 * IMAGE_SIZE}x{4 * IMAGE_SIZE}), got {w}x{h}")
    arr = np.asarray(img, dtype=np.uint8)
    if w == IMAGE_SIZE:
        return arr
    small = downsample(arr[None].astype(np.float32), w // IMAGE_SIZE)[0]
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


@app.command("oracle")
def oracle_cmd(
    images: Annotated[list[str], typer.Argument(help="Image files ('-' reads paths from stdin).")],
    json_out: JsonOpt = False,
) -> None:
    """Read attributes of toy faces from their pixels only, one line per image.

    Images must be 32x32; square multiples such as 64x64 are box-downsampled.

    Any other size is refused (exit code 3). An image in which no toy face is found is read all the same
    (face=not-found), reported on stderr, and makes the command exit 1 at the end.

    With --json: one object per line (path, attributes, face box, colours, scores).

    Examples:

      caso toyworld oracle data/toy/images/000000.png

      ls samples/*.png | caso toyworld oracle - --json
    """
    import numpy as np

    from caso_cli.toyworld.oracle import read_attributes

    paths = _read_paths(images)
    if not paths:
        raise UsageError("no images given")
    batch = np.stack([_load_32(p) for p in paths])
    faceless = 0
    for path, reading in zip(paths, read_attributes(batch).to_dicts(), strict=True):
        if json_out:
            print_json({"path": path, **reading})
        else:
            face = "" if reading["face_found"] else "  face=not-found"
            typer.echo(f"{path}  mustache={reading['mustache']} glasses={reading['glasses']} "
                       f"smile={reading['smile']} hair={reading['hair']} eyes={reading['eye_shape']}{face}")
        if not reading["face_found"]:
            faceless += 1
            info(f"Error: {path}: no toy face found, so its readings mean nothing (the oracle reads the toy "
                 "world's 32x32 faces)")
    if faceless:
        sys.exit(EXIT_CHECK_FAILED)


@app.command("path")
def path_cmd() -> None:
    """Print the folder of the shipped toy model (a standard diffusers pipeline folder).

    Examples:

      caso toyworld path

      caso model info --model "$(caso toyworld path)"
    """
    from caso_cli.toyworld import MODEL_DIR

    typer.echo(str(MODEL_DIR))


@app.command("sample")
def sample_cmd(
    prompts: Annotated[list[str], typer.Argument(help="Prompts, e.g. \"a face with glasses\" (one grid row each).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Grid PNG to write.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples per prompt.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, max=1000, help="DDIM steps.")] = 50,
    scale: Annotated[float, typer.Option("--scale", help="Classifier-free guidance scale.")] = 5.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Sample the toy model from text prompts and write a labelled grid; the oracle reads every sample.

    Examples:

      caso toyworld sample "a face with glasses" "a face with a mustache, red hair" --out grid.png
    """
    from caso_cli.io.png import save_png
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime
    from caso_cli.toyworld.oracle import read_attributes
    from caso_cli.toyworld.sample import labelled_grid, sample

    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists (use --overwrite)")
    t0 = time.monotonic()
    sd = load_model("toy", cpu_runtime())
    rows = [p for p in prompts for _ in range(n)]
    images = sample(sd, rows, seed=seed, steps=steps, scale=scale)
    save_png(labelled_grid(images, prompts, ncol=n), out, {"prompts": json.dumps(prompts, ensure_ascii=False),
                                                          "seed": str(seed), "steps": str(steps), "scale": str(scale)},
             overwrite=overwrite)
    readings = read_attributes(images).to_dicts()
    for i, prompt in enumerate(prompts):
        part = readings[i * n:(i + 1) * n]
        summary = {a: {c: sum(r[a] == c for r in part) for c in sorted({str(r[a]) for r in part})}
                   for a in ("mustache", "glasses", "smile", "hair")}
        if json_out:
            print_json({"prompt": prompt, "n": n, "oracle": summary})
        else:
            info(f"{prompt!r}: " + "; ".join(f"{a} " + ", ".join(f"{c} {k}" for c, k in v.items())
                                             for a, v in summary.items()))
    info(f"{plural(len(rows), 'sample')} in {time.monotonic() - t0:.1f} s")
    typer.echo(str(out))


def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the data, classifier and before/after sheet.")]
    = Path("caso-demo"),
    attr: Annotated[str, typer.Option("--attr", help="Toy attribute to learn and edit: mustache, glasses or "
                                                     "smile.")] = "mustache",
    scale: Annotated[str, typer.Option("--scale", "-s", help="Edit scale of the embedding alone: +scale adds, "
                                                             "-scale removes (the held row uses the settings "
                                                             "measured best: docs/editing.md).")] = "5",
    steps: Annotated[int | None, typer.Option("--learn-steps", help="Learning steps.")] = None,
    force: Annotated[bool, typer.Option("--force/--no-force", help="Replace the registry entries toy-<attr> an "
                                                                  "earlier demo saved (--no-force: stop if one "
                                                                  "exists).")] = True,
    hold: Annotated[bool, typer.Option("--hold/--no-hold", help="Learn every toy attribute together and also edit "
                                                                "with the others held (caso edit --hold all).")] = True,
    rare: Annotated[bool, typer.Option("--rare/--no-rare", help="Also learn skin tone, which the toy captions "
                                                                "seldom name, in context and edit the same faces "
                                                                "towards the other skin class, beside the prompt "
                                                                "that names it.")] = True,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Run CASO end to end on the toy world, offline on the CPU, judged by the exact oracle.

    Renders labelled toy faces, fits a classifier per attribute, learns the embeddings together (saved as
    toy-<attr>), edits held-out faces at +scale and -scale with the embedding alone and with every other attribute
    held, writes a before/after sheet and prints the oracle's rates side by side (docs/editing.md). Then it learns
    skin tone (Dark_skin), which the toy captions seldom name, in context and edits the same faces to the other skin
    class with it and with the prompt that names the class, in two more columns.

    Examples:

      caso demo

      caso demo --attr glasses --no-hold --out /tmp/caso-demo
    """
    import dataclasses

    from caso_cli.attrs import parse_scale
    from caso_cli.toyworld.demo import DemoConfig, run_demo

    config = DemoConfig(attr=attr, scale=parse_scale(scale, "--scale"), seed=seed, hold=hold)
    if not rare:
        config = dataclasses.replace(config, rare=None)
    if steps is not None:
        config = dataclasses.replace(config, learn=dataclasses.replace(config.learn, steps=steps))
    from caso_cli.pipelines.learn import progress_text

    with Progress("learn", config.learn.total_steps(config.n_train)) as bar:
        result = run_demo(out, config, force=force, status=bar.info,
                          progress=lambda r: bar.update(r["step"], progress_text(r)))
    if json_out:
        print_json(result.as_dict())
        return
    info(f"{'':18} add {attr} ({result.n_add} faces)  remove ({result.n_remove} faces)  other attributes kept")
    info(f"{f'alone, ±{config.scale:g}':18} {result.add_success:>{9 + len(attr)}.0%}  {result.remove_success:>15.0%}"
         f"  {result.kept:>22.0%}")
    if result.held is not None:
        h = result.held
        info(f"{'--hold all':18} {h.add_success:>{9 + len(attr)}.0%}  {h.remove_success:>15.0%}  {h.kept:>22.0%}"
             f"   (add: {config.hold_add.form} form, w {config.hold_add.scale:g}; remove: {config.hold_remove.form} "
             f"form, w -{config.hold_remove.scale:g})")
    if result.rare is not None:
        r = result.rare
        info(f"{r['attr']}, named in 2.6% of the toy captions: {r['n']} faces each edited to the other class (w "
             f"{r['scale']:g}, start {r['start']:g}): caso {r['caso']['success']:.0%} (others kept "
             f"{r['caso']['kept']:.0%}), the prompt naming the class {r['prompt']['success']:.0%} (kept "
             f"{r['prompt']['kept']:.0%})")
    info("seconds: " + ", ".join(f"{k} {v:g}" for k, v in result.seconds.items()))
    m = result.machine
    info(f"seed {m['seed']}, {plural(m['threads'], 'CPU thread')}, torch {m['torch']}, {m['cpu_kernels']} kernels: "
         "these numbers repeat where all four agree")
    info(f"embedding saved as {result.embedding}: try  caso edit {out}/data/images/000000.png --attr "
         f"{result.embedding}" + (" --hold all" if hold else "") + f" --out {out}/edited")
    info(f"measure the edits:  caso eval {result.inputs} {result.edits} --oracle toy --classifier "
         f"{out}/{attr}.classifier.safetensors --report {out}/report.html")
    typer.echo(str(result.sheet))
