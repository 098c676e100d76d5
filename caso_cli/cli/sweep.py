"""``caso interpolate``, ``caso reconstruct`` and ``caso generate``: more uses of one embedding (docs/method.md §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.edit import (
    HoldFormOpt,
    HoldOpt,
    RefineOpt,
    StartOpt,
    StepsOpt,
    edit_config,
    held_hint,
    model_for,
    run_batch,
)
from caso_cli.cli.options import DeviceOpt, DtypeOpt, JsonOpt, ModelConfigOpt, ModelOpt, SeedOpt
from caso_cli.cli.output import info, print_json
from caso_cli.config import EditConfig
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
        except ValueError:
            raise UsageError(f"--scales count must be an integer, got {parts[2]!r}") from None
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
    size: Annotated[int | None, typer.Option("--size", help="Image side [default: the model's resolution]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Sweep one attribute's guidance scale over an image: one inversion, all scales in one batch.

    Examples:

      caso interpolate photo.jpg --attr bushy_eyebrows --scales -6:6:7 --out sweep.png --gif sweep.gif

      caso interpolate photo.jpg --attr mustache --hold all --out sweep.png   # only the mustache changes
    """
    import torch

    from caso_cli.attrs import format_scale, resolve_attrs
    from caso_cli.grid import image_grid
    from caso_cli.imageio import fit_image, load_image, save_png, to_pil, to_tensor
    from caso_cli.models.loaders import load_model
    from caso_cli.pipelines.batch_edit import (
        EditJob,
        check_model,
        guidance,
        held_guidance,
        held_provenance,
        hold_tokens,
    )
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images, require_finite
    from caso_cli.runtime import make_runtime

    values = parse_scales(scales)
    attrs = resolve_attrs([attr], 1.0)
    config = edit_config(steps, start, False, inversion_refine)
    held = held_hint(hold or [], attrs)
    for path in (out, gif):
        if path is not None:
            _refuse_existing(path, overwrite)
    image = load_image(input)
    sd = load_model(model_for(attrs, model), make_runtime(device, dtype), config=model_config)
    x = to_tensor([fit_image(image, size or sd.resolution)])
    z_t = invert_latents(sd, encode_images(sd, x), config)
    meta: dict[str, str] = {}
    if held:
        tokens, edit_clfs = hold_tokens(sd, attrs, held)
        job = EditJob(attrs=attrs, out_dir=out, hold=tokens, hold_form=hold_form, edit_classifiers=edit_clfs)
        cond, read = held_guidance(sd, job, x, torch.tensor(values).view(-1, 1, 1, 1))
        meta = held_provenance(read[0], hold_form)
    else:
        check_model(attrs, sd)
        cond, _ = guidance(sd, attrs)
    edited = decode_latents(sd, edit_latents(sd, z_t.expand(len(values), -1, -1, -1), cond,
                                             torch.tensor(values), config))
    pics = to_pil(require_finite(edited, sd, "the sweep"))
    captions = [f"{format_scale(round(v, 2))}" for v in values]
    meta = {**meta, "caso:input": str(input), "caso:embeddings": attrs[0].embedding.name, "caso:classes": attrs[0].cls,
            "caso:scales": ",".join(captions), "caso:start": config.start_label(), "caso:steps": str(steps),
            "caso:inversion_refine": str(config.inversion_refine)}
    save_png(image_grid(pics, captions), out, meta, overwrite=overwrite)
    if frames is not None:
        for v, pic in zip(captions, pics, strict=True):
            save_png(pic, frames / f"{input.stem}.{attrs[0].label}.{v}.png", {**meta, "caso:scales": v},
                     overwrite=overwrite)
    if gif is not None:
        big = [p.resize((max(128, p.width), max(128, p.height))) for p in pics]
        big[0].save(gif, save_all=True, append_images=big[1:] + big[-2:0:-1], duration=250, loop=0)
    info(f"{len(values)} scales from one inversion: {', '.join(captions)}")
    typer.echo(str(out))


def reconstruct_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or '-' for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("reconstructed"),
    attr: Annotated[str | None, typer.Option("--attr", "-a", help="NAME:CLASS of the class the images already "
                                                                  "have: guides the reconstruction.")] = None,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Guidance scale with --attr.")] = "2",
    start: StartOpt = "1",
    steps: StepsOpt = 50,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    recursive: Annotated[bool, typer.Option("--recursive", "-r")] = False,
    size: Annotated[int | None, typer.Option("--size", help="Image side [default: the model's resolution]")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 4,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only output paths.")] = False,
    json_out: JsonOpt = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Invert images and denoise them back: unguided, or guided by the embedding of their own class (paper §4.3).

    Examples: caso reconstruct cats/ --out rec/      caso reconstruct cats/ --attr species:cat --scale 2 --out rec/
    """
    from caso_cli.attrs import parse_scale, resolve_attrs

    attrs = resolve_attrs([attr], parse_scale(scale, "--scale")) if attr else []
    run_batch(inputs, attrs, out, edit_config(steps, start, False, inversion_refine), recursive=recursive, size=size,
              fit="crop", batch_size=batch_size, overwrite=overwrite, skip_existing=skip_existing, quiet=quiet,
              json_out=json_out, model=model, model_config=model_config, seed=0, device=device, dtype=dtype,
              kind="recon")


def generate_cmd(
    attr: Annotated[list[str], typer.Option("--attr", "-a", help="NAME[:CLASS], repeatable (one multi-token "
                                                                 "condition).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Grid PNG.")] = Path("generated.png"),
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=256, help="Number of images.")] = 8,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Classifier-free guidance scale.")] = "5",
    steps: StepsOpt = 50,
    size: Annotated[int | None, typer.Option("--size", help="Image side [default: the model's resolution]")] = None,
    frames: Annotated[Path | None, typer.Option("--frames", help="Also write each image as a PNG here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Generate images from noise guided by learned class embeddings alone (no prompt).

    Example: caso generate --attr species:cat --n 8 --seed 1 --out cats.png
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.grid import image_grid
    from caso_cli.imageio import save_png, to_pil
    from caso_cli.models.loaders import load_model
    from caso_cli.pipelines.batch_edit import check_model, guidance
    from caso_cli.pipelines.generate import decode_latents, generate_latents, require_finite
    from caso_cli.runtime import make_runtime

    w = parse_scale(scale, "--scale")
    attrs = resolve_attrs(attr, w)
    edit_config(steps, "1", False)
    _refuse_existing(out, overwrite)
    sd = load_model(model_for(attrs, model), make_runtime(device, dtype), config=model_config)
    check_model(attrs, sd)
    cond, _ = guidance(sd, attrs)
    images = decode_latents(sd, generate_latents(sd, cond.expand(n, -1, -1), seed, steps, w, size))
    pics = to_pil(require_finite(images, sd, "generation"))
    meta = {"caso:embeddings": ",".join(a.embedding.name for a in attrs),
            "caso:classes": ",".join(a.cls for a in attrs), "caso:scales": f"{w:g}", "caso:steps": str(steps),
            "caso:seed": str(seed), "caso:model": sd.name}
    save_png(image_grid(pics, ncol=min(8, n)), out, meta, overwrite=overwrite)
    if frames is not None:
        for i, pic in enumerate(pics):
            save_png(pic, frames / f"{'+'.join(a.label for a in attrs)}.{seed}.{i:03d}.png", meta,
                     overwrite=overwrite)
    if json_out:
        print_json({"output": str(out), "n": n, "seed": seed, "class": [a.cls for a in attrs], "scale": w})
    else:
        typer.echo(str(out))


def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the data, classifier and before/after sheet.")]
    = Path("caso-demo"),
    attr: Annotated[str, typer.Option("--attr", help="Toy attribute to learn and edit: mustache, glasses or "
                                                     "smile.")] = "mustache",
    scale: Annotated[str, typer.Option("--scale", "-s", help="Edit scale: +scale adds, -scale removes.")] = "5",
    steps: Annotated[int | None, typer.Option("--learn-steps", help="Learning steps.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the registry entry toy-<attr>.")] = True,
    hold: Annotated[bool, typer.Option("--hold/--no-hold", help="Learn every toy attribute together and also edit "
                                                                "with the others held (caso edit --hold all).")] = True,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Run CASO end to end on the toy world, offline on the CPU, judged by the exact oracle.

    Renders labelled toy faces, fits a classifier per attribute, learns the embeddings together (saved as
    toy-<attr>), edits held-out faces at +scale and -scale with the embedding alone and with every other attribute
    held, writes a before/after sheet and prints the oracle's rates side by side.
    """
    import dataclasses

    from caso_cli.attrs import parse_scale
    from caso_cli.pipelines.demo import DemoConfig, run_demo

    config = DemoConfig(attr=attr, scale=parse_scale(scale, "--scale"), seed=seed, hold=hold)
    if steps is not None:
        config = dataclasses.replace(config, learn=dataclasses.replace(config.learn, steps=steps))
    result = run_demo(out, config, force=force, status=info)
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
    info("seconds: " + ", ".join(f"{k} {v:g}" for k, v in result.seconds.items()))
    info(f"embedding saved as {result.embedding}: try  caso edit {out}/data/images/000000.png --attr "
         f"{result.embedding}" + (" --hold all" if hold else ""))
    info(f"measure the edits:  caso eval {result.inputs} {result.edits} --oracle toy --classifier "
         f"{out}/{attr}.classifier.safetensors --report {out}/report.html")
    typer.echo(str(result.sheet))
