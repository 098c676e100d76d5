"""``caso edit``: edit image files with learned embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.options import (
    AllowPickleOpt,
    BatchSizeOpt,
    ContextOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    HoldFormOpt,
    HoldOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    QuietOpt,
    RecursiveOpt,
    RefineOpt,
    SizeOpt,
    SkipExistingOpt,
    StartOpt,
    StepsOpt,
    check_edit_options,
    edit_config,
    held_hint,
    warn_scales,
)
from caso_cli.cli.output import print_batch, refuse_unreadable
from caso_cli.config import EditConfig, ModelChoice

AttrOpt = Annotated[list[str], typer.Option("--attr", "-a", help="NAME[:CLASS][=SCALE], repeatable: e.g. mustache, "
                                                                 "hair:blond=5, smile=-3.")]


def edit_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or '-' to read paths from stdin.")],
    attr: AttrOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("edited"),
    scale: Annotated[str, typer.Option("--scale", "-s", help="Guidance scale for --attr without =SCALE; negative "
                                                             "reverses the edit.")] = "5",
    start: StartOpt = "0.6",
    steps: StepsOpt = 50,
    single_step: Annotated[bool, typer.Option("--single-step", help="Guide exactly one step (the first after "
                                                                    "inversion).")] = False,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    hold: HoldOpt = None,
    hold_form: HoldFormOpt = "auto",
    context: ContextOpt = None,
    recursive: RecursiveOpt = False,
    size: SizeOpt = None,
    fit: Annotated[str, typer.Option("--fit", help="crop (centre crop), pad (white bars) or stretch.")] = "crop",
    batch_size: BatchSizeOpt = 4,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    quiet: QuietOpt = False,
    cache_inversions: Annotated[bool, typer.Option("--cache-inversions", help="Keep inversions on disk (user cache "
                                                                              "dir) for later runs.")] = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Edit images towards (or, with a negative scale, away from) learned attribute classes.

    One DDIM inversion per image (null condition), then denoising with classifier-free guidance on the embeddings.

    Several --attr with one scale build one multi-token condition (tokens in a fixed order, so the order of --attr
    does not matter); different scales give one guidance term each.

    Outputs are OUT/<stem>.<attr>.<scale>.png with provenance in PNG text chunks.

    Examples:

      caso edit photo.jpg --attr mustache --scale 5

      caso edit faces/ -r --attr smile=3 --attr hair:blond=5 --out edited/

      caso edit photo.jpg --attr mustache --hold all      # name every other known attribute as read

      find shots -name '*.png' | caso edit - --attr smile --out edited/ --json | jq .
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import EditJob, batch_inputs, open_batch

    attrs = resolve_attrs(attr, parse_scale(scale, "--scale"))
    warn_scales([a.scale for a in attrs])
    config = edit_config(steps, start, single_step, inversion_refine)
    check_edit_options(size, fit, batch_size, hold_form)
    job = EditJob(attrs=attrs, out_dir=out, config=config, size=size, fit=fit, batch_size=batch_size,
                  overwrite=overwrite, skip_existing=skip_existing, cache_inversions=cache_inversions,
                  hold=tuple(held_hint(hold or [], attrs)), hold_form=hold_form, context=context)
    items = batch_inputs(inputs, recursive)
    refuse_unreadable(items)  # before the model loads
    print_batch(open_batch(job, items, ModelChoice(model, model_config, device, dtype, allow_pickle)), quiet=quiet,
                json_out=json_out)
