"""``caso interpolate``, ``caso reconstruct`` and ``caso generate``: more uses of one embedding (docs/method.md §5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.edit import (
    BatchSizeOpt,
    ContextOpt,
    HoldFormOpt,
    HoldOpt,
    QuietOpt,
    RecursiveOpt,
    RefineOpt,
    SkipExistingOpt,
    StartOpt,
    StepsOpt,
    check_edit_options,
    edit_config,
    held_hint,
    run_batch,
    warn_scales,
)
from caso_cli.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    SeedOpt,
    SizeOpt,
)
from caso_cli.cli.output import Progress, info, plural, print_json
from caso_cli.config import EditConfig, ModelChoice
from caso_cli.errors import InputError, UsageError


def parse_scales(text: str) -> list[float]:
    """``-6:6:7`` (start:stop:count, ends included) or a list ``-4,0,4``."""
    from caso_cli.attrs import parse_scale

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"--scales range must be START:STOP:COUNT, got {text!r}")
        a, b = parse_scale(parts[0], "--scales start"), parse_scale(parts[1], "--scales stop")
        try:
            n = int(parts[2])
        except ValueError as exc:
            raise UsageError(f"--scales count must be an integer, got {parts[2]!r}") from exc
        if not 2 <= n <= 64:
            raise UsageError(f"--scales count must be between 2 and 64, got {n}")
        return [a + (b - a) * i / (n - 1) for i in range(n)]
    values = [parse_scale(p, "--scales value") for p in text.split(",") if p.strip()]
    if not values:
        raise UsageError("--scales is empty")
    return values


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists (use --overwrite)")


def interpolate_cmd(
    input: Annotated[Path, typer.Argument(help="The image to sweep.")],
    attr: Annotated[str, typer.Option("--attr", "-a", help="NAME[:CLASS] of the embedding to sweep.")],
    scales: Annotated[str, typer.Option("--scales", help="START:STOP:COUNT or a list like -4,0,4.")] = "-6:6:7",
    out: Annotated[Path, typer.Option("--out", "-o", help="Grid PNG with each cell's scale under it.")] =
    Path("sweep.png"),
    gif: Annotated[Path | None, typer.Option("--gif", help="Also write an animated GIF of the sweep.")] = None,
    frames: Annotated[Path | None, typer.Option("--frames", help="Also write each frame as a PNG here.")] = None,
    start: StartOpt = "0.6",
    steps: StepsOpt = 50,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    hold: HoldOpt = None,
    hold_form: HoldFormOpt = "auto",
    context: ContextOpt = None,
    size: SizeOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Sweep one attribute's guidance scale over an image: one inversion, all scales in one batch.

    Examples:

      caso interpolate photo.jpg --attr bushy_eyebrows --scales -6:6:7 --out sweep.png --gif sweep.gif

      caso interpolate photo.jpg --attr mustache --hold all --out sweep.png   # the other attributes named as read
    """
    from caso_cli.attrs import resolve_attrs
    from caso_cli.pipelines.batch_edit import open_model
    from caso_cli.pipelines.interpolate import SweepJob, run_sweep

    values = parse_scales(scales)
    warn_scales(values)
    attrs = resolve_attrs([attr], 1.0)
    config = edit_config(steps, start, False, inversion_refine)
    check_edit_options(size, hold_form=hold_form)
    job = SweepJob(source=input, attr=attrs[0], scales=tuple(values), out=out, config=config, gif=gif, frames=frames,
                   size=size, hold=tuple(held_hint(hold or [], attrs)), hold_form=hold_form, overwrite=overwrite,
                   context=context)
    for path in (out, gif):
        if path is not None:
            _refuse_existing(path, overwrite)
    result = run_sweep(open_model(ModelChoice(model, model_config, device, dtype, allow_pickle), attrs), job)
    info(f"{plural(len(values), 'scale')} from one inversion: {', '.join(result.captions)}")
    if json_out:
        print_json({"input": str(input), "grid": str(result.grid), "scales": values,
                    "frames": [str(f) for f in result.frames], "gif": None if result.gif is None else str(result.gif),
                    "held": result.held})
    else:
        typer.echo(str(result.grid))


def reconstruct_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or '-' for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("reconstructed"),
    attr: Annotated[str | None, typer.Option("--attr", "-a", help="NAME:CLASS of the class the images already "
                                                                  "have: guides the reconstruction.")] = None,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Guidance scale with --attr.")] = "2",
    start: StartOpt = "1",
    steps: StepsOpt = 50,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    recursive: RecursiveOpt = False,
    size: SizeOpt = None,
    batch_size: BatchSizeOpt = 4,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Invert images and denoise them back: unguided, or guided by the embedding of their own class (paper §4.3).

    Examples:

      caso reconstruct cats/ --out rec/

      caso reconstruct cats/ --attr species:cat --scale 2 --out rec/
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import EditJob

    attrs = resolve_attrs([attr], parse_scale(scale, "--scale")) if attr else []
    warn_scales([a.scale for a in attrs])
    config = edit_config(steps, start, False, inversion_refine)
    check_edit_options(size, batch_size=batch_size)
    job = EditJob(attrs=attrs, out_dir=out, config=config, size=size, batch_size=batch_size, overwrite=overwrite,
                  skip_existing=skip_existing, kind="recon")
    run_batch(inputs, job, ModelChoice(model, model_config, device, dtype, allow_pickle), recursive=recursive,
              quiet=quiet, json_out=json_out)


def generate_cmd(
    attr: Annotated[list[str], typer.Option("--attr", "-a", help="NAME[:CLASS], repeatable (one multi-token "
                                                                 "condition).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Grid PNG, or a folder (DIR/) for one PNG per image and "
                                                          "the grid.")] = "generated.png",
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=256, help="Number of images.")] = 8,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Classifier-free guidance scale.")] = "5",
    steps: StepsOpt = 50,
    size: SizeOpt = None,
    frames: Annotated[Path | None, typer.Option("--frames", help="Also write each image as a PNG here.")] = None,
    overwrite: OverwriteOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Generate images from noise guided by learned class embeddings alone (no prompt).

    Examples:

      caso generate --attr species:cat --n 8 --seed 1 --out cats.png

      caso generate --attr toy-mustache --attr toy-glasses --n 16 --out both.png

      caso generate --attr toy-mustache --n 4 --out samples/      (samples/toy-mustache.0.000.png ... and a grid)
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import open_model
    from caso_cli.pipelines.generate import GenerateJob, run_generate

    w = parse_scale(scale, "--scale")
    warn_scales([w])
    attrs = resolve_attrs(attr, w)
    edit_config(steps, "1", False)  # the --steps check
    check_edit_options(size)
    grid = Path(out)
    if out.endswith(("/", os.sep)) or grid.is_dir():  # a folder: every image, and the grid beside them
        frames = grid
        grid = grid / f"{'+'.join(a.label for a in attrs)}.{seed}.grid.png"
    _refuse_existing(grid, overwrite)
    job = GenerateJob(attrs=attrs, out=grid, n=n, scale=w, steps=steps, seed=seed, size=size, frames=frames,
                      overwrite=overwrite)
    paths = run_generate(open_model(ModelChoice(model, model_config, device, dtype, allow_pickle), attrs), job)
    if json_out:
        print_json({"output": str(grid), "images": [str(p) for p in paths[1:]], "n": n, "seed": seed,
                    "class": [a.cls for a in attrs], "scale": w})
    else:
        typer.echo(str(grid))


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
